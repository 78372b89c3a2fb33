#!/usr/bin/env python3
"""Offline checks of packaging/kubernetes (run by check.sh, which finds the tools).

1. Every plain manifest (base/*.yaml, examples/*.yaml) and every object that
   `kubectl kustomize` renders from the base and each overlay validates
   against the Kubernetes JSON schemas bundled with kubernetes-validate, in
   strict mode (an unknown field fails), for each version asked for. A kind
   without a schema fails too (kubernetes-validate itself only warns).
2. Each kustomization renders with the first kubectl (Debian's 1.20); every
   other kubectl given must render the same objects.
3. What the manifests are for holds in every render: the agent DaemonSet on
   the host network with exactly its capabilities, probes on the metrics
   endpoint it configures, the sensor address each overlay sets, a sensor
   Service and Deployment that agree with the agents' ActiveClient port...
4. With --xrpcapd, the agent accepts each container's environment
   (`xrpcapd --check-config`, no file, no warning); with --sensor, the
   sensor starts with each Deployment's arguments.

Exit status 1 with one line per failure.
"""

import argparse
import os
import re
import subprocess
import sys

try:
    import yaml
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, all_versions
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(f"kubernetes: {e}: run scripts/setup.sh (kubernetes-validate missing)")

AFPACKET_CAPS = {"NET_RAW", "NET_ADMIN"}
AFXDP_CAPS = AFPACKET_CAPS | {"BPF", "PERFMON", "IPC_LOCK", "SYS_RESOURCE"}
IN_CLUSTER_SENSOR = "xrpcap-sensor.xrpcap.svc"

# What each kustomization must render, besides the checks every render
# passes. A new overlay needs its line here.
EXPECT = {
    "base": {},
    "overlays/sensor-address": {"sensor": "192.0.2.10"},
    "overlays/interface": {"options": ["ifname=eth0"]},
    "overlays/filter": {
        "env": {"XRPCAPD_LOCAL_FILTER": "not port 22"},
        "sensor_args": ["--filter=tcp port 80 or tcp port 443"],
    },
    "overlays/afxdp": {
        "caps": AFXDP_CAPS,
        "options": ["ifname=span0"],
        "env": {"XRPCAPD_CAPTURE": "afxdp:span0"},
        "node_selector": {"xrpcap-afxdp": "true"},
        "min_memory_limit": 512 << 20,
    },
}

KUSTOMIZATION_NAMES = ("Kustomization", "kustomization.yaml", "kustomization.yml")

failures = []
checks = 0


def fail(where, msg):
    failures.append(f"{where}: {msg}")


def check(ok, where, msg):
    global checks
    checks += 1
    if not ok:
        fail(where, msg)
    return ok


def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def key(obj):
    m = obj.get("metadata", {})
    return (obj.get("apiVersion"), obj.get("kind"), m.get("namespace", ""), m.get("name"))


def find(objs, kind, name):
    for o in objs:
        if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
            return o
    return None


def quantity(q):
    """A memory quantity in bytes (the suffixes the manifests use)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        return None
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(m.group(1)) * mult


def port_of(addr):
    """The port of ADDR:PORT (IPv4, [IPv6] or a name)."""
    m = re.fullmatch(r".*:(\d+)", addr or "")
    return int(m.group(1)) if m else None


# A resource.Quantity: the schemas say only "string or number".
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")


def quantities(node, path=""):
    """Every value under a `requests`, `limits` or `sizeLimit` of `node`."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("requests", "limits") and isinstance(v, dict):
                for name, q in v.items():
                    yield f"{path}.{k}.{name}", q
            elif k == "sizeLimit":
                yield f"{path}.{k}", v
            else:
                yield from quantities(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from quantities(v, f"{path}[{i}]")


def validate(objs, where, versions):
    for obj in objs:
        for path, q in quantities(obj):
            check(QUANTITY.fullmatch(str(q)) is not None, where,
                  f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}{path}: "
                  f"{q!r} is not a quantity")
        for v in versions:
            global checks
            checks += 1
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except SchemaNotFoundError as e:
                fail(where, f"{key(obj)}: no schema: {e.message}")
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(where, f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} "
                            f"against {e.version}: {path}: {e.message}")


def render(kubectl, kdir):
    p = subprocess.run([kubectl, "kustomize", kdir], capture_output=True, text=True)
    if p.returncode != 0:
        return None, (p.stderr or p.stdout).strip()
    return load_docs(p.stdout), None


def workspace_version(repo):
    text = open(os.path.join(repo, "Cargo.toml")).read()
    m = re.search(r'(?ms)^\[workspace\.package\].*?^version\s*=\s*"([^"]+)"', text)
    return m.group(1) if m else None


def image_uid(repo):
    """The image's user (packaging/image.sh), when that script exists."""
    try:
        text = open(os.path.join(repo, "packaging", "image.sh")).read()
    except FileNotFoundError:
        return None
    m = re.search(r"^UID_GID=(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def container(pod_spec, name):
    for c in pod_spec.get("containers", []):
        if c.get("name") == name:
            return c
    return None


def environment(where, objs, c):
    """The container's environment: its ConfigMaps (which must exist), then env."""
    env = {}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef", {}).get("name")
        cm = find(objs, "ConfigMap", ref)
        if check(cm is not None, where, f"envFrom names ConfigMap {ref}, not rendered"):
            env.update(cm.get("data", {}))
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def named_port(c, port):
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def active_clients(value):
    """HOST, PORT and options of each ActiveClient entry of the variable."""
    out = []
    for line in (value or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        out.append((parts[0], parts[1] if len(parts) > 1 else "", parts[2:]))
    return out


def check_agent(where, objs, c, pod_spec, exp, ctx):
    """The agent container `c` of `pod_spec` (DaemonSet or sidecar)."""
    sc = c.get("securityContext", {})
    pod_sc = pod_spec.get("securityContext", {})
    caps = sc.get("capabilities", {})
    want_caps = exp.get("caps", AFPACKET_CAPS)
    check(caps.get("drop") == ["ALL"], where, f"capabilities.drop is {caps.get('drop')}, not [ALL]")
    add = caps.get("add", [])
    check(sorted(add) == sorted(want_caps) and len(add) == len(set(add)), where,
          f"capabilities.add is {add}, not exactly {sorted(want_caps)}")
    check(sc.get("readOnlyRootFilesystem") is True, where, "root filesystem not read-only")
    check(not sc.get("privileged"), where, "privileged")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid == 0:
        check(sc.get("allowPrivilegeEscalation") is False, where,
              "root with added capabilities: allowPrivilegeEscalation must be false")
    else:
        check(uid is not None, where, "no runAsUser: the image's user is not pinned")
        if ctx["image_uid"] is not None:
            check(uid == ctx["image_uid"], where,
                  f"runAsUser {uid}, the image's user is {ctx['image_uid']} (packaging/image.sh)")
        # A non-root user has only the binary's file capabilities (the two
        # AF_PACKET ones), granted by exec only without no_new_privs.
        check(set(add) == AFPACKET_CAPS, where,
              f"a non-root agent gets only NET_RAW and NET_ADMIN (file capabilities), not {add}")
        check(sc.get("allowPrivilegeEscalation") is True, where,
              "non-root with file capabilities needs allowPrivilegeEscalation: true")
    image = c.get("image", "")
    check(image == f"localhost/xrpcapd:{ctx['version']}", where,
          f"image {image}, not localhost/xrpcapd:{ctx['version']} (the workspace version)")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        check("memory" in res.get(kind, {}), where, f"no memory {kind}")
    check("cpu" in res.get("requests", {}), where, "no cpu request")
    if "min_memory_limit" in exp:
        lim = quantity(res.get("limits", {}).get("memory"))
        check(lim is not None and lim >= exp["min_memory_limit"], where,
              f"memory limit {res.get('limits', {}).get('memory')} below {exp['min_memory_limit'] >> 20}Mi")

    env = environment(where, objs, c)
    ctx["envs"].append((where, env))
    check(env.get("XRPCAPD_PASSIVE") == "no", where, "XRPCAPD_PASSIVE is not \"no\" (active mode only)")
    check(env.get("XRPCAPD_NULL_AUTH_PERMIT") == "YES", where,
          "XRPCAPD_NULL_AUTH_PERMIT is not \"YES\": xrpcap-sensor's and ExtraHop's NULL login is refused")
    for var, value in exp.get("env", {}).items():
        check(env.get(var) == value, where, f"{var} is {env.get(var)!r}, not {value!r}")
    clients = active_clients(env.get("XRPCAPD_ACTIVE_CLIENT"))
    if check(clients, where, "no XRPCAPD_ACTIVE_CLIENT entry"):
        for host, port, options in clients:
            check(host == exp.get("sensor", IN_CLUSTER_SENSOR), where,
                  f"ActiveClient host {host}, not {exp.get('sensor', IN_CLUSTER_SENSOR)}")
            check(port == "2003", where, f"ActiveClient port {port}, not 2003")
        first_options = clients[0][2]
        for opt in exp.get("options", []):
            check(opt in first_options, where, f"ActiveClient options {first_options} lack {opt}")

    # The probes read the endpoint the environment opens.
    mport = port_of(env.get("XRPCAPD_METRICS_LISTEN"))
    check(mport is not None, where, "no XRPCAPD_METRICS_LISTEN: the probes have no endpoint")
    for probe in ("livenessProbe",) + (() if ctx.get("sidecar") else ("readinessProbe",)):
        get = c.get(probe, {}).get("httpGet")
        if check(get is not None, where, f"no {probe}.httpGet"):
            check(get.get("path") == "/metrics", where,
                  f"{probe} path {get.get('path')}: the agent serves only /metrics")
            p = named_port(c, get.get("port"))
            check(p == mport, where, f"{probe} port {get.get('port')} ({p}) is not the metrics port {mport}")
    return clients


def check_daemonset(where, objs, exp, ctx):
    ds = find(objs, "DaemonSet", "xrpcapd")
    if not check(ds is not None, where, "no DaemonSet xrpcapd"):
        return
    spec = ds["spec"]["template"]["spec"]
    check(spec.get("hostNetwork") is True, where, "DaemonSet without hostNetwork")
    check(spec.get("dnsPolicy") == "ClusterFirstWithHostNet", where,
          f"dnsPolicy {spec.get('dnsPolicy')}, not ClusterFirstWithHostNet (cluster DNS on hostNetwork)")
    check({"operator": "Exists"} in spec.get("tolerations", []), where,
          "no toleration of every taint ({operator: Exists})")
    check(spec.get("nodeSelector", {}).get("kubernetes.io/os") == "linux", where,
          "no nodeSelector kubernetes.io/os=linux: tolerating every taint reaches Windows nodes")
    for k, v in exp.get("node_selector", {}).items():
        check(spec.get("nodeSelector", {}).get(k) == v, where, f"nodeSelector lacks {k}={v}")
    c = container(spec, "xrpcapd")
    if not check(c is not None, where, "no container xrpcapd"):
        return
    clients = check_agent(where, objs, c, spec, exp, ctx)

    sensor = find(objs, "Deployment", "xrpcap-sensor")
    in_cluster = exp.get("sensor", IN_CLUSTER_SENSOR) == IN_CLUSTER_SENSOR
    check((sensor is not None) == in_cluster, where,
          "an in-cluster sensor without agents pointing at it, or agents pointing at a missing one")
    if sensor is None:
        return
    svc = find(objs, "Service", "xrpcap-sensor")
    if not check(svc is not None, where, "sensor Deployment without its Service"):
        return
    check(svc["metadata"].get("namespace") == "xrpcap", where, "the Service is not in namespace xrpcap")
    sspec = sensor["spec"]["template"]["spec"]
    sel = svc["spec"].get("selector", {})
    labels = sensor["spec"]["template"]["metadata"].get("labels", {})
    check(sel and all(labels.get(k) == v for k, v in sel.items()), where,
          "the Service does not select the sensor's pods")
    check(sensor["spec"].get("replicas") == 1, where,
          "more than one sensor behind one Service: control and data could meet different ones")
    sc = container(sspec, "xrpcap-sensor")
    if not check(sc is not None, where, "no container xrpcap-sensor"):
        return
    check(sc.get("image") == f"localhost/xrpcap-sensor:{ctx['version']}", where,
          f"sensor image {sc.get('image')}, not localhost/xrpcap-sensor:{ctx['version']}")
    args = sc.get("args", [])
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    listen = port_of(opts.get("listen"))
    svc_ports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
    control = svc_ports.get("control", {})
    check(control.get("port") == listen and control.get("protocol", "TCP") == "TCP", where,
          f"Service control port {control.get('port')} is not the sensor's --listen port {listen}")
    for _, port, _ in clients or []:
        check(str(listen) == port, where, f"agents dial port {port}, the sensor listens on {listen}")
    check(re.fullmatch(r"\d+-\d+", opts.get("udp-ports", "")) is not None, where,
          "no --udp-ports range (the data ports to open)")
    check(svc["spec"].get("clusterIP") == "None", where,
          "the Service is not headless: UDP data would need every data port listed")
    ssc = sc.get("securityContext", {})
    suid = ssc.get("runAsUser", sspec.get("securityContext", {}).get("runAsUser"))
    check(suid not in (None, 0), where, f"the sensor runs as {suid}, not the image's non-root user")
    if ctx["image_uid"] is not None:
        check(suid == ctx["image_uid"], where,
              f"sensor runAsUser {suid}, the image's user is {ctx['image_uid']} (packaging/image.sh)")
    check(ssc.get("capabilities", {}).get("drop") == ["ALL"] and
          not ssc.get("capabilities", {}).get("add"), where, "the sensor must have no capability")
    check(ssc.get("readOnlyRootFilesystem") is True, where, "sensor root filesystem not read-only")
    check(opts.get("out") in [m.get("mountPath") for m in sc.get("volumeMounts", [])], where,
          f"--out {opts.get('out')} is not a mounted volume")
    for probe in ("livenessProbe", "readinessProbe"):
        get = sc.get(probe, {}).get("httpGet", {})
        check(get.get("path") == "/metrics" and
              named_port(sc, get.get("port")) == port_of(opts.get("metrics-listen")), where,
              f"sensor {probe} is not GET /metrics on --metrics-listen's port")
    for a in exp.get("sensor_args", []):
        check(a in args, where, f"sensor args lack {a}")
    ctx["sensor_args"].append((where, args))


def check_sidecar(where, objs, ctx):
    dep = find(objs, "Deployment", "web")
    if not check(dep is not None, where, "no Deployment web"):
        return
    spec = dep["spec"]["template"]["spec"]
    check(not spec.get("hostNetwork"), where, "the sidecar example must use the pod's network")
    check(len(spec.get("containers", [])) >= 2, where, "no application container beside the agent")
    c = container(spec, "xrpcapd")
    if check(c is not None, where, "no container xrpcapd"):
        check_agent(where, objs, c, spec, {"options": ["ifname=eth0"]}, dict(ctx, sidecar=True))


def check_config(xrpcapd, where, env):
    """The agent itself reads the environment: `xrpcapd --check-config` with
    only these variables (no file) must accept it, without a warning, and
    show each ActiveClient entry."""
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    clean.update({k: v for k, v in env.items() if v is not None})
    p = subprocess.run([xrpcapd, "--check-config"], env=clean, capture_output=True, text=True)
    out = p.stdout + p.stderr
    if not check(p.returncode == 0, where, f"xrpcapd --check-config exits {p.returncode}: {out.strip()}"):
        return
    # The interfaces are the nodes', not this machine's: a preselected
    # interface missing here is expected.
    warnings = [line for line in p.stderr.splitlines()
                if line.lower().startswith("warning") and ": no interface " not in line]
    check(not warnings, where, f"xrpcapd --check-config warns: {warnings}")
    for host, port, _ in active_clients(env.get("XRPCAPD_ACTIVE_CLIENT")):
        check(re.search(rf"(?m)^ActiveClient = {re.escape(host)}, ?{port}\b", p.stdout) is not None,
              where, f"--check-config does not show ActiveClient {host},{port}:\n{p.stdout}")


def sensor_runs(sensor, where, args):
    """The sensor starts with the manifest's arguments (its flags exist, the
    filter compiles, the port range parses) and stops after --duration; on
    loopback ports the kernel picks and in a temporary --out."""
    import tempfile
    local = {"listen": "127.0.0.1:0", "metrics-listen": "127.0.0.1:0"}
    with tempfile.TemporaryDirectory() as out:
        run = []
        for a in args:
            name = a[2:].split("=", 1)[0] if a.startswith("--") else None
            if name in local:
                a = f"--{name}={local[name]}"
            elif name == "out":
                a = f"--out={out}"
            run.append(a)
        try:
            p = subprocess.run([sensor, *run, "--duration=0.3"], capture_output=True,
                               text=True, timeout=30)
        except subprocess.TimeoutExpired:
            fail(where, f"xrpcap-sensor {' '.join(run)} did not stop after --duration")
            return
        check(p.returncode == 0, where,
              f"xrpcap-sensor refuses the manifest's arguments {args}: {p.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="packaging/kubernetes or a copy")
    ap.add_argument("--repo", required=True, help="the repository (Cargo.toml, packaging/image.sh)")
    ap.add_argument("--kubectl", action="append", required=True,
                    help="kubectl binaries; the first is the reference")
    ap.add_argument("--versions", nargs="*", help="schema versions (default: oldest, newest)")
    ap.add_argument("--xrpcapd", help="an xrpcapd binary: runs --check-config on every agent environment")
    ap.add_argument("--sensor", help="an xrpcap-sensor binary: starts it with every sensor's arguments")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    repo = os.path.abspath(a.repo)
    bundled = all_versions()
    versions = a.versions or [bundled[0], bundled[-1]]
    ctx = {"version": workspace_version(repo), "image_uid": image_uid(repo), "envs": [],
           "sensor_args": []}

    # 1. The plain manifests, as files.
    plain = {}
    for sub in ("base", "examples"):
        d = os.path.join(root, sub)
        for f in sorted(os.listdir(d)):
            if f.endswith((".yaml", ".yml")) and f not in KUSTOMIZATION_NAMES:
                rel = f"{sub}/{f}"
                try:
                    plain[rel] = load_docs(open(os.path.join(d, f)).read())
                except yaml.YAMLError as e:
                    fail(rel, f"not YAML: {e}")
                    continue
                check(plain[rel], rel, "no object")
                validate(plain[rel], rel, versions)
    check_sidecar("examples/sidecar.yaml", plain.get("examples/sidecar.yaml", []), ctx)

    # 2. Every kustomization, rendered by each kubectl, validated, checked.
    kdirs = []
    for dirpath, _, files in os.walk(root):
        if any(n in files for n in KUSTOMIZATION_NAMES):
            kdirs.append(os.path.relpath(dirpath, root))
    kdirs.sort()
    check("base" in kdirs and len(kdirs) > 1, "kustomize", f"no base or no overlay in {kdirs}")
    for rel in kdirs:
        exp = EXPECT.get(rel)
        if not check(exp is not None, rel, "a kustomization without expectations in check.py's EXPECT"):
            continue
        ref = None
        for i, kubectl in enumerate(a.kubectl):
            objs, err = render(kubectl, os.path.join(root, rel))
            if not check(objs is not None, rel, f"{kubectl} kustomize failed: {err}"):
                continue
            if i == 0:
                ref = objs
                continue
            if ref is not None:
                mine = sorted(objs, key=lambda o: str(key(o)))
                theirs = sorted(ref, key=lambda o: str(key(o)))
                check(mine == theirs, rel, f"{kubectl} renders other objects than {a.kubectl[0]}")
        if ref is None:
            continue
        validate(ref, f"{rel} (rendered)", versions)
        check(len({key(o) for o in ref}) == len(ref), rel, "an object rendered twice")
        for o in ref:
            if o.get("kind") != "Namespace":
                check(o["metadata"].get("namespace") == "xrpcap", rel,
                      f"{key(o)} outside namespace xrpcap")
        check_daemonset(rel, ref, exp, ctx)
    for rel in EXPECT:
        check(rel in kdirs, rel, "expected by check.py, but no kustomization there")

    # 3. Every agent environment, read by the agent.
    if a.xrpcapd:
        for where, env in ctx["envs"]:
            check_config(a.xrpcapd, where, env)
    else:
        print("kubernetes: no XRPCAPD_BIN: the agent's --check-config of each environment was not run",
              file=sys.stderr)
    if a.sensor:
        for where, args in ctx["sensor_args"]:
            sensor_runs(a.sensor, where, args)
    else:
        print("kubernetes: no XRPCAP_SENSOR_BIN: the sensor was not started with the manifests' arguments",
              file=sys.stderr)

    for f in failures:
        print(f"kubernetes: FAIL {f}", file=sys.stderr)
    print(f"kubernetes: {len(plain)} manifest files, {len(kdirs)} kustomizations x "
          f"{len(a.kubectl)} kubectl, schemas {' and '.join(versions)}: "
          f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
