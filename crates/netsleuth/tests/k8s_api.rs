//! `--k8s-api` against a stand-in API server on loopback (plain HTTP, a kubeconfig pointing at it):
//! the names come from the pods, Services, EndpointSlices and nodes it lists. Built only with the
//! `k8s-api` feature (`cargo test -p netsleuth --features k8s-api --test k8s_api`).
#![cfg(feature = "k8s-api")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Serves `GET` of the four lists from the objects of `fixtures/k8s/lab-cluster.json`, one request per
/// connection, until the test ends.
fn fake_api_server() -> u16 {
    let cluster: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace().join("fixtures/k8s/lab-cluster.json")).unwrap(),
    )
    .unwrap();
    let items = cluster["items"].as_array().unwrap().clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap_or_default();
            // The rest of the request head.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let kind = [
                ("/api/v1/pods", "Pod"),
                ("/api/v1/services", "Service"),
                ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice"),
                ("/api/v1/nodes", "Node"),
            ]
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .map(|(_, k)| *k);
            let (status, body) = match kind {
                Some(kind) => {
                    let of_kind: Vec<&serde_json::Value> =
                        items.iter().filter(|i| i["kind"] == kind).collect();
                    let list = serde_json::json!({
                        "apiVersion": if kind == "EndpointSlice" { "discovery.k8s.io/v1" } else { "v1" },
                        "kind": format!("{kind}List"),
                        "metadata": {"resourceVersion": "1"},
                        "items": of_kind,
                    });
                    ("200 OK", list.to_string())
                }
                None => (
                    "404 Not Found",
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#
                        .to_string(),
                ),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn names_come_from_the_api_server() {
    let port = fake_api_server();
    let dir = std::env::temp_dir().join(format!("netsleuth-k8s-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\ncurrent-context: fake\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["analyze", "--utc", "--k8s-api"])
        .arg(workspace().join("fixtures/lab/conntrack-dnat-rebalance/node.pcap"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("connection pod default/client-7d9f (10.244.1.10:50814) → service default/web:80 (10.96.0.20)"),
        "{text}"
    );
    // A pod known only from its EndpointSlice.
    assert!(
        text.contains("pod default/web-5c8d-b (10.244.2.12:8080)"),
        "{text}"
    );
}
