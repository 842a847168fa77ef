#!/usr/bin/env python3
"""Checks deploy/netsleuth-watch.yaml: it parses as YAML, and the DaemonSet says what README.md
"Running watch on a cluster" promises (host network and PID, read-only host mounts, only the listed
capabilities, a read-only root, the scrape annotation, every node tolerated). Run by
crates/netsleuth/tests/deploy.rs when python3 with PyYAML is there; `python3 deploy/check.py`."""
import pathlib
import sys

import yaml

path = pathlib.Path(__file__).with_name("netsleuth-watch.yaml")
docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"Namespace", "DaemonSet"}, kinds.keys()
ds = kinds["DaemonSet"]
assert ds["apiVersion"] == "apps/v1"
spec = ds["spec"]["template"]["spec"]
meta = ds["spec"]["template"]["metadata"]
assert ds["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()
assert spec["hostNetwork"] is True and spec["hostPID"] is True
assert {"operator": "Exists"} in spec["tolerations"]
ann = meta["annotations"]
assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
(c,) = spec["containers"]
assert c["args"][0] == "watch" and "--metrics" in c["args"]
port = c["args"][c["args"].index("--metrics") + 1].rsplit(":", 1)[1]
assert ann["prometheus.io/port"] == port == str(c["ports"][0]["containerPort"]), port
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] is True and sc["privileged"] is False
assert sc["capabilities"]["drop"] == ["ALL"]
assert sorted(sc["capabilities"]["add"]) == sorted(
    ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "NET_RAW"]
), sc["capabilities"]["add"]
# The API refuses allowPrivilegeEscalation: false with SYS_ADMIN added.
assert sc.get("allowPrivilegeEscalation") is not False
volumes = {v["name"]: v for v in spec["volumes"]}
for m in c["volumeMounts"]:
    v = volumes[m["name"]]
    if "hostPath" in v:
        assert m.get("readOnly") is True, f"host mount {m['mountPath']} is not read-only"
res = c["resources"]
for k in ("cpu", "memory"):
    assert k in res["requests"] and k in res["limits"], k
print(f"{path.name}: ok ({len(docs)} objects)")
