//! `kms-bench`: the KMS operations through the API against the same primitive called
//! in-process, in the same run.
//!
//! One in-process Baton (embedded store, audit log required) serves Encrypt and Decrypt of
//! 4 KiB under a symmetric key, Sign and Verify with RSA-2048 (RSASSA_PSS_SHA_256) and P-256
//! (ECDSA_SHA_256), and GenerateDataKey (AES_256). For each, the primitive Baton runs for it
//! (`baton_crypto::kms`: the blob encryption, the signature, the data key's generation and
//! wrapping) is called in-process on as many threads as the machine has cores. A bare hyper
//! server answering a fixed body is measured too, so the API's fixed cost is visible. Cases
//! alternate within each round; the summary gives medians over rounds, the spread, and each
//! API case's per-round ratio to its primitive.
//!
//! Run: `cargo run --release -p baton-bench --bin kms-bench -- [--rounds N] [--seconds S]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton_bench::{
    admin_client, flag, load, median_and_spread, runtime, signed_post, start_baton, start_reference,
};
use baton_crypto::SecretBytes;
use baton_crypto::kms::{self as ck, KeySpec, MessageType, SigningAlgorithm};
use bytes::Bytes;
use serde_json::{Value, json};

const CONCURRENCY: usize = 32;

/// Calls `op` on every core for `seconds`; returns calls per second.
fn primitive(seconds: u64, op: Arc<dyn Fn() + Send + Sync>) -> f64 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, op) = (stop.clone(), count.clone(), op.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    op();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

struct Case {
    name: &'static str,
    request: http::Request<Bytes>,
    op: Arc<dyn Fn() + Send + Sync>,
}

fn main() -> anyhow::Result<()> {
    let rounds = flag("--rounds", 5)? as usize;
    let seconds = flag("--seconds", 3)?;
    let baton_rt = runtime("baton")?;
    let reference_rt = runtime("reference")?;
    let load_rt = runtime("load")?;
    let dir = tempfile::tempdir()?;
    let addr = start_baton(&baton_rt, dir.path())?;
    let admin = admin_client(addr)?;
    let call = |target: &str, body: Value| -> anyhow::Result<Value> {
        Ok(load_rt.block_on(admin.call::<_, Value>(target, &body))?)
    };
    let create = |spec: &str, usage: &str| -> anyhow::Result<String> {
        let out = call(
            "TrentService.CreateKey",
            json!({"KeySpec": spec, "KeyUsage": usage}),
        )?;
        Ok(out["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let sym = create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")?;
    let rsa = create("RSA_2048", "SIGN_VERIFY")?;
    let p256 = create("ECC_NIST_P256", "SIGN_VERIFY")?;

    let plaintext = vec![0x5au8; 4096];
    let blob = call(
        "TrentService.Encrypt",
        json!({"KeyId": sym, "Plaintext": STANDARD.encode(&plaintext)}),
    )?["CiphertextBlob"]
        .clone();
    let message = STANDARD.encode(b"a message to sign, as a JWT's signing input would be");
    let signature = |key: &str, alg: &str| -> anyhow::Result<Value> {
        Ok(call(
            "TrentService.Sign",
            json!({"KeyId": key, "Message": message, "SigningAlgorithm": alg}),
        )?["Signature"]
            .clone())
    };
    let rsa_sig = signature(&rsa, "RSASSA_PSS_SHA_256")?;
    let p256_sig = signature(&p256, "ECDSA_SHA_256")?;

    // The primitives, with material of the same specs.
    let sym_material = Arc::new(ck::generate_key_material(KeySpec::SymmetricDefault)?);
    let rsa_material = Arc::new(ck::generate_key_material(KeySpec::Rsa2048)?);
    let p256_material = Arc::new(ck::generate_key_material(KeySpec::EccNistP256)?);
    let key_id = "0b7e2f52-4c1d-4a3e-9f00-1234567890ab";
    let version = "3f0d2a51-8f8e-4c55-9d43-7d9a3b1c2e10";
    let local_blob = Arc::new(ck::encrypt_blob(
        &sym_material,
        key_id,
        version,
        &[],
        &plaintext,
    )?);
    let msg = Arc::new(STANDARD.decode(&message)?);
    // Parsed once, as the server keeps them.
    let rsa_parsed = Arc::new(ck::ParsedKey::parse(KeySpec::Rsa2048, &rsa_material)?);
    let p256_parsed = Arc::new(ck::ParsedKey::parse(KeySpec::EccNistP256, &p256_material)?);
    let sign_local =
        |spec, material: &SecretBytes, alg| ck::sign(spec, material, alg, &msg, MessageType::Raw);
    let local_rsa_sig = Arc::new(sign_local(
        KeySpec::Rsa2048,
        &rsa_material,
        SigningAlgorithm::RsassaPssSha256,
    )?);
    let local_p256_sig = Arc::new(sign_local(
        KeySpec::EccNistP256,
        &p256_material,
        SigningAlgorithm::EcdsaSha256,
    )?);

    let post = |target: &str, body: Value| signed_post(addr, target, &body);
    let cases = vec![
        Case {
            name: "Encrypt 4 KiB",
            request: post(
                "TrentService.Encrypt",
                json!({"KeyId": sym, "Plaintext": STANDARD.encode(&plaintext)}),
            )?,
            op: {
                let (m, p) = (sym_material.clone(), plaintext.clone());
                Arc::new(move || {
                    let _ = ck::encrypt_blob(&m, key_id, version, &[], &p);
                })
            },
        },
        Case {
            name: "Decrypt 4 KiB",
            request: post("TrentService.Decrypt", json!({"CiphertextBlob": blob}))?,
            op: {
                let (m, b) = (sym_material.clone(), local_blob.clone());
                Arc::new(move || {
                    let _ = ck::decrypt_blob(&m, &b, &[]);
                })
            },
        },
        Case {
            name: "GenerateDataKey AES_256",
            request: post(
                "TrentService.GenerateDataKey",
                json!({"KeyId": sym, "KeySpec": "AES_256"}),
            )?,
            op: {
                let m = sym_material.clone();
                Arc::new(move || {
                    let mut key = [0u8; 32];
                    let _ = baton_crypto::fill_random(&mut key);
                    let _ = ck::encrypt_blob(&m, key_id, version, &[], &key);
                })
            },
        },
        Case {
            name: "Sign RSA-2048 PSS",
            request: post(
                "TrentService.Sign",
                json!({"KeyId": rsa, "Message": message, "SigningAlgorithm": "RSASSA_PSS_SHA_256"}),
            )?,
            op: {
                let (k, msg) = (rsa_parsed.clone(), msg.clone());
                Arc::new(move || {
                    let _ = k.sign(SigningAlgorithm::RsassaPssSha256, &msg, MessageType::Raw);
                })
            },
        },
        Case {
            name: "Verify RSA-2048 PSS",
            request: post(
                "TrentService.Verify",
                json!({"KeyId": rsa, "Message": message, "Signature": rsa_sig,
                       "SigningAlgorithm": "RSASSA_PSS_SHA_256"}),
            )?,
            op: {
                let (k, msg, sig) = (rsa_parsed.clone(), msg.clone(), local_rsa_sig.clone());
                Arc::new(move || {
                    let _ = k.verify(
                        SigningAlgorithm::RsassaPssSha256,
                        &msg,
                        MessageType::Raw,
                        &sig,
                    );
                })
            },
        },
        Case {
            name: "Sign P-256",
            request: post(
                "TrentService.Sign",
                json!({"KeyId": p256, "Message": message, "SigningAlgorithm": "ECDSA_SHA_256"}),
            )?,
            op: {
                let (k, msg) = (p256_parsed.clone(), msg.clone());
                Arc::new(move || {
                    let _ = k.sign(SigningAlgorithm::EcdsaSha256, &msg, MessageType::Raw);
                })
            },
        },
        Case {
            name: "Verify P-256",
            request: post(
                "TrentService.Verify",
                json!({"KeyId": p256, "Message": message, "Signature": p256_sig,
                       "SigningAlgorithm": "ECDSA_SHA_256"}),
            )?,
            op: {
                let (k, msg, sig) = (p256_parsed.clone(), msg.clone(), local_p256_sig.clone());
                Arc::new(move || {
                    let _ = k.verify(SigningAlgorithm::EcdsaSha256, &msg, MessageType::Raw, &sig);
                })
            },
        },
    ];
    let decrypted = call("TrentService.Decrypt", json!({"CiphertextBlob": blob}))?;
    let reference = start_reference(&reference_rt, Bytes::from(serde_json::to_vec(&decrypted)?))?;
    let reference_request = signed_post(reference, "TrentService.Decrypt", &json!({}))?;

    for case in &cases {
        let warm = load(&load_rt, &case.request, CONCURRENCY, Duration::from_secs(1));
        anyhow::ensure!(
            warm.errors == 0 && warm.requests_per_second > 0.0,
            "{}: the warm-up failed ({} errors)",
            case.name,
            warm.errors
        );
    }
    println!(
        "KMS operations through the API (concurrency {CONCURRENCY}) vs the primitive in-process \
         on every core; {rounds} rounds of {seconds} s, cases alternating"
    );
    let mut api: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut local: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut reference_rps = Vec::new();
    for round in 0..rounds {
        let r = load(
            &load_rt,
            &reference_request,
            CONCURRENCY,
            Duration::from_secs(seconds),
        );
        println!(
            "  round {}: {:<24} {:>9.0} req/s",
            round + 1,
            "reference (bare hyper)",
            r.requests_per_second
        );
        reference_rps.push(r.requests_per_second);
        for (i, case) in cases.iter().enumerate() {
            let r = load(
                &load_rt,
                &case.request,
                CONCURRENCY,
                Duration::from_secs(seconds),
            );
            anyhow::ensure!(r.errors == 0, "{}: {} errors", case.name, r.errors);
            let p = primitive(seconds, case.op.clone());
            println!(
                "  round {}: {:<24} {:>9.0} req/s p50 {:>6} µs | primitive {:>9.0} /s",
                round + 1,
                case.name,
                r.requests_per_second,
                r.p50_us,
                p
            );
            api[i].push(r.requests_per_second);
            local[i].push(p);
        }
    }
    println!();
    let (median, low, high) = median_and_spread(reference_rps.clone());
    println!("reference (bare hyper)    median {median:>8.0} req/s [{low:.0}..{high:.0}]");
    for (i, case) in cases.iter().enumerate() {
        let (a, a_low, a_high) = median_and_spread(api[i].clone());
        let (l, l_low, l_high) = median_and_spread(local[i].clone());
        let ratio = median_and_spread(api[i].iter().zip(&local[i]).map(|(a, l)| a / l).collect());
        let vs_reference = median_and_spread(
            api[i]
                .iter()
                .zip(&reference_rps)
                .map(|(a, r)| a / r)
                .collect(),
        );
        println!(
            "{:<24}  API {a:>8.0}/s [{a_low:.0}..{a_high:.0}]  primitive {l:>9.0}/s \
             [{l_low:.0}..{l_high:.0}]  API/primitive {:.3} [{:.3}..{:.3}]  API/reference {:.2}",
            case.name, ratio.0, ratio.1, ratio.2, vs_reference.0
        );
    }
    Ok(())
}
