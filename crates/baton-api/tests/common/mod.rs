//! A Baton server in the test process, on the embedded store, and a client of it with the
//! bootstrap administrator key.

use std::time::Duration;

use baton_client::{AccessKey, Client, ClientConfig};

pub const KEY_ID: &str = "BTNINPROCESSTEST0001";
pub const SECRET: &str = "in-process-test-secret-access-key-000000";

/// Starts a server on `dir` that runs until `shutdown` completes; returns a client of it and
/// the server's task.
pub async fn start(
    dir: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Client, tokio::task::JoinHandle<()>) {
    let options = baton_api::ServeOptions::embedded_for_tests(dir, KEY_ID, SECRET);
    let server = baton_api::Server::bind(options).await.unwrap();
    let addr = server.local_addr().unwrap();
    let running = tokio::spawn(async move {
        server.run(shutdown).await.unwrap();
    });
    let client = Client::new(ClientConfig {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        access_key: AccessKey {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        },
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    (client, running)
}
