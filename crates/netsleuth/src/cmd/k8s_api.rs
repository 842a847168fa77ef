//! `--k8s-api`: the pods, Services, EndpointSlices and nodes read from the API server (kube-rs), as
//! `kubectl get pods,services,endpointslices,nodes -A -o json` would print them, handed to the same
//! sans-IO name table as `--k8s FILE`. Behind the cargo feature `k8s-api`: the default build has no
//! async runtime, HTTP client or TLS.

use super::CliError;
use netsleuth_core::names::Names;

#[cfg(not(feature = "k8s-api"))]
pub fn read() -> Result<Names, CliError> {
    Err(CliError::K8sApi(
        "--k8s-api: this netsleuth was built without the API reader (hint: build it with `cargo build --features k8s-api`, or give `--k8s FILE` from `kubectl get pods,services,endpointslices,nodes -A -o json`)".into(),
    ))
}

#[cfg(feature = "k8s-api")]
pub fn read() -> Result<Names, CliError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        CliError::K8sApi(format!(
            "--k8s-api: {what}: {e} (hint: inside a pod it needs a service account allowed to list pods, services, endpointslices and nodes; elsewhere a kubeconfig)"
        ))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("starting the client", &e))?;
    let list = rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| fail("no API server configured", &e))?;
        let mut items = Vec::new();
        items.extend(list_all::<k8s_openapi::api::core::v1::Pod>(&client, "Pod").await?);
        items.extend(list_all::<k8s_openapi::api::core::v1::Service>(&client, "Service").await?);
        items.extend(
            list_all::<k8s_openapi::api::discovery::v1::EndpointSlice>(&client, "EndpointSlice")
                .await?,
        );
        items.extend(list_all::<k8s_openapi::api::core::v1::Node>(&client, "Node").await?);
        Ok::<_, CliError>(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
    })?;
    let bytes = serde_json::to_vec(&list).map_err(|e| fail("encoding the objects", &e))?;
    Names::from_json(&bytes).map_err(|e| fail("reading the objects", &e))
}

/// Every object of kind `K` in every namespace, as JSON with its `kind` (a list's items lack it).
#[cfg(feature = "k8s-api")]
async fn list_all<K>(client: &kube::Client, kind: &str) -> Result<Vec<serde_json::Value>, CliError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::all(client.clone());
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| CliError::K8sApi(format!("--k8s-api: listing {kind}s: {e}")))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| {
            let mut v = serde_json::to_value(o).ok()?;
            v["kind"] = kind.into();
            Some(v)
        })
        .collect())
}
