#!/usr/bin/env python3
"""Check the Grafana dashboards against what the binaries really expose.

    check.py --metrics PAGE [--metrics PAGE...] DASHBOARD.json [DASHBOARD.json...]

PAGE is the text of a `GET /metrics` (Prometheus text format or
OpenMetrics). Every PromQL expression of the dashboards (panel targets and
template variable queries) is parsed for the metric names it reads; each
must appear in one of the pages, else the check fails and names the panel.
With `promtool` on the PATH (Debian's `prometheus` package), every
expression is also parsed by Prometheus itself (`promtool check rules` on a
rule file of one recording rule per expression). Python 3 standard library
only. Exit status: 0 fine, 1 a check failed, 2 bad usage or input.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Words of PromQL that are not metric names when not followed by "(".
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "start", "end",
}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)")
# Grafana's own variables that stand for a duration.
DURATION_VARS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}")
VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")


def promql_of(query):
    """The PromQL inside a template variable query, or None (label_values(label))."""
    q = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_]\w*\s*\)", q, re.S)
    if m:
        return m.group(1)
    if re.fullmatch(r"label_values\(\s*[A-Za-z_]\w*\s*\)|label_names\(\s*\)|metrics\(.*\)", q, re.S):
        return None
    m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
    if m:
        return m.group(1)
    return q


def expressions(dashboard):
    """(where, PromQL) of every target and query variable of a dashboard."""
    out = []

    def panels(ps, parent=""):
        for p in ps or []:
            where = f"{parent}panel {p.get('title', p.get('id'))!r}"
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((f"{where} target {t.get('refId')}", t["expr"]))
            panels(p.get("panels"), parent)

    panels(dashboard.get("panels"))
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if q:
            e = promql_of(q)
            if e:
                out.append((f"variable ${v.get('name')}", e))
    return out


def to_promql(expr):
    """The expression with Grafana's variables replaced, as Prometheus would get it."""
    return VARIABLE.sub(".*", DURATION_VARS.sub("5m", expr))


def metric_names(expr):
    """The metric names a PromQL expression reads."""
    e = STRING.sub('""', to_promql(expr))
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    while True:
        stripped = GROUPING.sub(" ", e)
        if stripped == e:
            break
        e = stripped
    names = set()
    for m in IDENT.finditer(e):
        word = m.group(1)
        if word.lower() in KEYWORDS or re.match(r"\s*\(", e[m.end():]):
            continue
        names.add(word)
    return names


def exposed(page):
    """The metric names on a /metrics page (samples, HELP and TYPE lines)."""
    names = set()
    for line in page.splitlines():
        m = re.match(r"#\s*(?:HELP|TYPE)\s+([A-Za-z_:][\w:]*)", line)
        if m:
            names.add(m.group(1))
            continue
        m = re.match(r"([A-Za-z_:][\w:]*)(?:\{|\s)", line)
        if m:
            names.add(m.group(1))
    return names


def promtool_check(exprs):
    """Problems promtool finds in the expressions' syntax ([] when none)."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": to_promql(e)} for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
    try:
        r = subprocess.run(["promtool", "check", "rules", "--lint=none", f.name],
                           capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    return [] if r.returncode == 0 else [(r.stdout + r.stderr).strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", action="append", required=True, metavar="PAGE",
                    help="a file holding a /metrics page of a real binary (repeat for more)")
    ap.add_argument("--no-promtool", action="store_true", help="skip the syntax check by promtool")
    ap.add_argument("dashboards", nargs="+", metavar="DASHBOARD.json")
    a = ap.parse_args()

    known = set()
    for path in a.metrics:
        try:
            with open(path, encoding="utf-8") as f:
                known |= exposed(f.read())
        except OSError as e:
            sys.exit(f"check.py: {path}: {e}")
    if not known:
        sys.exit("check.py: the metrics pages hold no metric")

    failed = False
    for path in a.dashboards:
        try:
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"check.py: {path}: {e}")
        bad = False
        exprs = expressions(dash)
        if not exprs:
            print(f"{path}: no PromQL expression found", file=sys.stderr)
            bad = True
        used = set()
        for where, expr in exprs:
            names = metric_names(expr)
            if not names:
                print(f"{path}: {where}: no metric name in {expr!r}", file=sys.stderr)
                bad = True
            for n in sorted(names - known):
                print(f"{path}: {where}: {n} is not exposed (expression {expr!r})", file=sys.stderr)
                bad = True
            used |= names
        if shutil.which("promtool") and not a.no_promtool:
            for problem in promtool_check(exprs):
                print(f"{path}: promtool check rules:\n{problem}", file=sys.stderr)
                bad = True
            syntax = "promtool: syntax fine"
        else:
            syntax = "promtool not run"
        print(f"{path}: {len(exprs)} expressions, {len(used)} metric names, all exposed; {syntax}"
              if not bad else f"{path}: FAILED")
        failed |= bad
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
