#!/usr/bin/env python3
"""Turns the benchmark's raw measurements into the one table it prints and saves.

Why separate: the shell scripts only record numbers ({"key", "round", "value"} lines, or
"skipped" reasons); everything about presentation lives here: medians over rounds, ratios taken
within each round (then their median, so a slow round of the machine does not skew a ratio),
the targets printed next to each figure (reported, never asserted), and the JSON/CSV file.

  report.py --raw RAW.jsonl --meta META.json --out FILE(.json|.csv)
"""
import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict

MiB = 1 << 20


class Data:
    def __init__(self, path):
        self.vals = defaultdict(dict)  # key -> {round: value}
        self.skips = {}                # key -> reason
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    print(f"report: ignoring a malformed line: {line.strip()}", file=sys.stderr)
                    continue
                if "skipped" in r:
                    self.skips.setdefault(r["key"], r["skipped"])
                elif "value" in r and r["value"] is not None:
                    self.vals[r["key"]][r["round"]] = float(r["value"])

    def rounds(self, key):
        return [v for _, v in sorted(self.vals.get(key, {}).items())]

    def median(self, key):
        v = self.rounds(key)
        return statistics.median(v) if v else None

    def max(self, key):
        v = self.rounds(key)
        return max(v) if v else None

    def skipped(self, *keys):
        for k in keys:
            for sk, reason in self.skips.items():
                if sk == k or k.startswith(sk + "."):
                    return reason
        return None

    def per_round(self, fn, *keys):
        """fn(values...) for each round where every key has a value."""
        common = set.intersection(*(set(self.vals.get(k, {})) for k in keys)) if keys else set()
        out = []
        for r in sorted(common):
            try:
                out.append(fn(*(self.vals[k][r] for k in keys)))
            except ZeroDivisionError:
                pass
        return out


# --- formatting ---------------------------------------------------------------------------------

def fmt_num(v, unit):
    if v is None:
        return "-"
    if unit == "bytes":
        for name, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
            if abs(v) >= size:
                return f"{v / size:.3g} {name}" if abs(v) / size < 100 else f"{v / size:.0f} {name}"
        return f"{v:.0f} B"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "%":
        return f"{v:+.0f}%"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}" if unit else s


def fmt_rounds(vals, unit):
    if len(vals) <= 1:
        return ""
    return " / ".join(fmt_num(v, unit).split(" ")[0] for v in vals)


def judge(value, target):
    if target is None or value is None:
        return ""
    op, limit = target[0], target[1]
    ok = {">=": value >= limit, "<=": value <= limit, "==": value == limit}[op]
    return "met" if ok else "MISSED"


# --- the rows -------------------------------------------------------------------------------------

class Table:
    def __init__(self, data, meta):
        self.d = data
        self.meta = meta
        self.rows = []
        self.section = ""

    def heading(self, text):
        self.section = text

    SECTION_NAMES = {"1": "fs", "2": "incremental", "3": "server", "4": "snapshot",
                     "5": "restart", "6": "memory"}

    def section_ran(self):
        ran = self.meta.get("sections")
        name = self.SECTION_NAMES.get(self.section.split(".")[0])
        return ran is None or name is None or name in ran

    def add(self, name, values, unit, target=None, note="", skip=None, agg="median",
            diag=False, judged=None):
        """diag: a diagnostic row. Its target and status are shown in parentheses: they say
        whether the target would be met without what the diagnostic removes, not a result.
        judged: per-round values the target applies to instead of the row's own (e.g. a time
        shown in seconds, judged as a fraction of another row's time in the same round)."""
        if not values and not skip and not self.section_ran():
            return  # a section left out with --only: no "no data" rows for it
        tgt = target and (f"({target[2]})" if diag else target[2])
        row = {"section": self.section, "measurement": name, "unit": unit, "target": tgt,
               "diagnostic": diag}
        if skip:
            self.rows.append({**row, "value": None, "rounds": [], "status": skip, "note": ""})
            return
        if not values:
            value = None
        elif agg == "max":
            value = max(values)
        else:
            value = statistics.median(values)
        if judged is not None:
            status = judge(statistics.median(judged), target) if judged else "no data"
        else:
            status = judge(value, target) if values else "no data"
        if diag and status in ("met", "MISSED"):
            status = f"({status})"
        self.rows.append({**row, "value": value, "rounds": values, "status": status,
                          "note": note})

    def value(self, name, key, unit, target=None, note="", agg="median", diag=False):
        self.add(name, self.d.rounds(key), unit, target, note, self.d.skipped(key), agg, diag)

    def ratio(self, name, num, den, target=None, unit="x", fn=lambda a, b: a / b, note="",
              diag=False):
        skip = self.d.skipped(num, den)
        self.add(name, self.d.per_round(fn, num, den), unit, target, note, skip, diag=diag)

    def has(self, *keys):
        """True if any key has data or was recorded as skipped (a diagnostic that was run)."""
        return any(self.d.rounds(k) or self.d.skipped(k) for k in keys)

    def note(self, parts):
        """parts: (label, key, unit); drops the ones without data."""
        out = []
        for label, key, unit in parts:
            v = self.d.median(key)
            if v is not None:
                out.append(label.format(fmt_num(v, unit)))
        return ", ".join(out)


TARGET_SEQ_NATIVE = (">=", 0.85, ">= 0.85x")
TARGET_PLL = (">=", 1.0, ">= 1.0x")


def build(t):
    d, m = t.d, t.meta
    sizes = m.get("sizes", {})
    fio = sizes.get("fio_mib", 0)
    fio_s = f"{fio // 1024} GiB" if fio >= 1024 else f"{fio} MiB"

    t.heading("1. filesystem overhead (native / passthrough_ll / passthrough_ll -o xattr / "
              "backupfs)")
    workloads = [
        ("seqwrite", f"seq write 1 MiB x {fio_s}, fsync", "MiB/s", TARGET_SEQ_NATIVE, TARGET_PLL),
        ("seqread", f"seq read 1 MiB x {fio_s}, cold", "MiB/s", None, None),
        ("randwrite", f"4 KiB random writes x {sizes.get('randwrite_mib', 0)} MiB, fsync", "IOPS",
         None, TARGET_PLL),
        ("fsyncwrite", f"4 KiB random writes x {sizes.get('fsync_writes', 0)}, each fsync'd",
         "IOPS", None, TARGET_PLL),
        ("untar", f"untar {sizes.get('tar_entries', 0)} entries", "entries/s", None, TARGET_PLL),
        ("walk_cold", "stat walk, cold cache", "entries/s", None, TARGET_PLL),
        ("walk_warm", "stat walk, warm cache", "entries/s", None, None),
    ]
    baselines = (("pll", "passthrough_ll"), ("pll-xattr", "passthrough_ll -o xattr"))
    for w, label, unit, t_native, t_pll in workloads:
        t.value(f"{label}: native", f"fs.{w}.native", unit)
        for cfg, name in baselines:
            t.value(f"{label}: {name}", f"fs.{w}.{cfg}", unit,
                    note=t.note([("daemon CPU {}", f"fs.{w}.{cfg}.cpu", "s")]))
        t.value(f"{label}: backupfs", f"fs.{w}.backupfs", unit,
                note=t.note([("daemon CPU {}", f"fs.{w}.backupfs.cpu", "s"),
                             ("backupd CPU {}", f"fs.{w}.backupd.cpu", "s"),
                             ("shipping lag {}", f"fs.{w}.backupfs.lag", "s")]))
        t.ratio(f"{label}: backupfs / native", f"fs.{w}.backupfs", f"fs.{w}.native",
                target=t_native)
        for cfg, name in baselines:
            t.ratio(f"{label}: backupfs / {name}", f"fs.{w}.backupfs", f"fs.{w}.{cfg}",
                    target=t_pll)
    for cfg, name in baselines + (("backupfs", "backupfs"),):
        untar_requests(t, cfg, name)
    fs_load(t)

    # Diagnostics: the same workloads with what might cost backupfs its target taken away, for
    # the workloads that have a target. The headline figures above stay what a user gets.
    diag = [wl for wl in workloads if wl[0] in ("seqwrite", "randwrite", "fsyncwrite", "untar")]
    if any(t.has(f"fs.{wl[0]}.{c}") for wl in diag for c in ("backupfs-tmpfs",
                                                              "backupfs-detached")):
        t.heading("1. diagnostics (not headline figures): backupd's state on tmpfs = no second "
                  "on-disk copy; no backupd attached = capture without shipping")
    for w, label, unit, t_native, t_pll in diag:
        for cfg, what, extra in (
                ("backupfs-tmpfs", "backupfs, backupd state on tmpfs",
                 [("backupd CPU {}", f"fs.{w}.backupfs-tmpfs.backupd_cpu", "s"),
                  ("shipping lag {}", f"fs.{w}.backupfs-tmpfs.lag", "s")]),
                ("backupfs-detached", "backupfs, no backupd attached", [])):
            k = f"fs.{w}.{cfg}"
            if not t.has(k):
                continue
            t.value(f"{label}: {what}", k, unit, diag=True,
                    note=t.note([("daemon CPU {}", f"{k}.cpu", "s")] + extra))
            if t_native:
                t.ratio(f"{label}: {what} / native", k, f"fs.{w}.native", target=t_native,
                        diag=True)
            for base, name in baselines:
                t.ratio(f"{label}: {what} / {name}", k, f"fs.{w}.{base}", target=t_pll,
                        diag=True)
    for cfg, name in (("backupfs-tmpfs", "backupfs, backupd state on tmpfs"),
                      ("backupfs-detached", "backupfs, no backupd attached")):
        if t.has(f"fs.untar_requests.{cfg}"):
            untar_requests(t, cfg, name, diag=True)

    t.heading("2. incremental: 1 MiB inside a large file + 10 small files touched")
    t.value("backupfs: change on the replica after", "inc.backupfs.change.latency", "s",
            ("<=", 1.0, "<= 1 s"),
            note=t.note([("on the mirror after {}", "inc.backupfs.change.mirror_latency", "s")]))
    t.value("backupfs: bytes read from disk (read_bytes)", "inc.backupfs.change.read_bytes",
            "bytes", ("<=", 2 * MiB, "<= 2 MiB"),
            note=t.note([("file data read to ship {}", "inc.backupfs.change.data", "bytes"),
                         ("rchar {} (incl. FUSE requests)", "inc.backupfs.change.rchar",
                          "bytes")]))
    t.value("backupfs: bytes on the wire", "inc.backupfs.change.wire", "bytes",
            ("<=", 2 * MiB, "<= 2 MiB"),
            note=t.note([("CPU {} (backupfs+backupd+replicator)", "inc.backupfs.change.cpu",
                          "s")]))
    t.value("backupfs, no change: bytes on the wire", "inc.backupfs.nochange.wire", "bytes",
            ("==", 0, "0"))
    t.value("backupfs, no change: bytes read from disk", "inc.backupfs.nochange.read_bytes",
            "bytes", ("==", 0, "0"),
            note=t.note([("CPU {} over the idle window", "inc.backupfs.nochange.cpu", "s"),
                         ("rchar {}", "inc.backupfs.nochange.rchar", "bytes")]))
    t.value("backupfs: full baseline, mount to replica", "inc.backupfs.full.wall", "s")
    if t.has("inc.pll.change.read_bytes", "inc.pll.change"):
        t.value("[diagnostic] passthrough_ll, the same change: bytes read from disk",
                "inc.pll.change.read_bytes", "bytes", diag=True,
                note=t.note([("rchar {} (incl. FUSE requests)", "inc.pll.change.rchar", "bytes"),
                             ("daemon CPU {}", "inc.pll.change.cpu", "s")]))
    for tool in ("rsync", "restic", "borg"):
        for kind, label in (("change", "change"), ("nochange", "no change"),
                            ("full", "full backup")):
            k = f"inc.{tool}.{kind}"
            t.value(f"{tool}: {label}, wall", f"{k}.wall", "s",
                    note=t.note([("CPU {}", f"{k}.cpu", "s"),
                                 ("read {}", f"{k}.rchar", "bytes"),
                                 ("disk read {}", f"{k}.read_bytes", "bytes"),
                                 ("sent {}", f"{k}.wire", "bytes"),
                                 ("added {}", f"{k}.added", "bytes")]))

    t.heading("3. server: baseline ingest, fan-out, memory")
    t.value("ingest, no replica (mount to mirror converged)", "srv.ingest.r0", "MiB/s",
            (">=", 500, ">= 500 MiB/s"),
            note=t.note([("mirror after {}", "srv.mirror.r0", "s"),
                         ("backupfs CPU {}", "srv.cpu.backupfs.r0", "s"),
                         ("backupd CPU {}", "srv.cpu.backupd.r0", "s"),
                         ("dataset {}", "dataset.bytes", "bytes")]))
    for tool, how in (("cp", "cp -a"), ("rsync", "rsync -a")):
        t.value(f"local copy of the dataset, cold, on the same disk: {how} + sync",
                f"srv.copy.{tool}", "s", note=t.note([("{}", f"srv.copy.{tool}.mibs", "MiB/s")]))
        t.ratio(f"ingest, no replica / {how} + sync (MiB/s over MiB/s)", "srv.copy." + tool,
                "srv.mirror.r0")
    for n in (1, 2):
        t.value(f"ingest with {n} replica(s), to the mirror", f"srv.ingest.r{n}", "MiB/s",
                note=t.note([("backupd CPU {}", f"srv.cpu.backupd.r{n}", "s")]))
        t.value(f"all {n} replica(s) converged after", f"srv.replicas.r{n}", "s",
                note=t.note([("replicators CPU {}", f"srv.cpu.replicators.r{n}", "s")]))
    t.ratio("second replica's cost (time to all replicas)", "srv.replicas.r2", "srv.replicas.r1",
            ("<=", 20, "<= +20%"), unit="%", fn=lambda a, b: (a / b - 1) * 100)
    t.ratio("TLS cost: ingest, no replica (without TLS / with TLS)", "srv.notls.mirror.r0",
            "srv.mirror.r0", ("<=", 15, "<= 15%"), unit="%", fn=lambda a, b: (1 - a / b) * 100,
            note=t.note([("with TLS {}", "srv.ingest.r0", "MiB/s"),
                         ("without {}", "srv.notls.ingest.r0", "MiB/s"),
                         ("backupd CPU without TLS {}", "srv.notls.cpu.backupd.r0", "s")]))
    t.ratio("TLS cost: 2 replicas converged (time without TLS / with TLS)",
            "srv.notls.replicas.r2", "srv.replicas.r2", ("<=", 15, "<= 15%"), unit="%",
            fn=lambda a, b: (1 - a / b) * 100,
            note=t.note([("without TLS {}", "srv.notls.replicas.r2", "s")]))
    for proc, contexts in (("backupfs", ("fs", "ingest", "incremental")),
                           ("backupd", ("fs", "ingest", "incremental", "snapshot")),
                           ("replicator", ("ingest", "incremental")),
                           ("passthrough_ll", ("fs", "incremental")),
                           ("passthrough_ll-xattr", ("fs",))):
        for ctx in contexts:
            key = f"rss.{proc}.{ctx}"
            if d.rounds(key):
                name = proc.replace("-xattr", " -o xattr")
                t.value(f"peak RSS {name} ({ctx})", key, "MiB", agg="max")
    if t.has("srv.tmpfs.ingest.r0", "srv.tmpfs"):
        t.heading("3. diagnostics (not headline figures): backupd's state and the replicas on "
                  "tmpfs, the dataset still read cold from disk")
        t.value("ingest, no replica, state on tmpfs", "srv.tmpfs.ingest.r0", "MiB/s",
                (">=", 500, ">= 500 MiB/s"), diag=True,
                note=t.note([("mirror after {}", "srv.tmpfs.mirror.r0", "s"),
                             ("backupfs CPU {}", "srv.tmpfs.cpu.backupfs.r0", "s"),
                             ("backupd CPU {}", "srv.tmpfs.cpu.backupd.r0", "s")]))
        t.ratio("ingest, no replica: on tmpfs / on disk", "srv.tmpfs.ingest.r0", "srv.ingest.r0",
                diag=True)
        for n in (1, 2):
            t.value(f"all {n} replica(s) converged after, on tmpfs", f"srv.tmpfs.replicas.r{n}",
                    "s", diag=True,
                    note=t.note([("ingest to the mirror {}", f"srv.tmpfs.ingest.r{n}", "MiB/s"),
                                 ("backupd CPU {}", f"srv.tmpfs.cpu.backupd.r{n}", "s"),
                                 ("replicators CPU {}", f"srv.tmpfs.cpu.replicators.r{n}",
                                  "s")]))
        t.ratio("second replica's cost, on tmpfs", "srv.tmpfs.replicas.r2",
                "srv.tmpfs.replicas.r1", ("<=", 20, "<= +20%"), unit="%",
                fn=lambda a, b: (a / b - 1) * 100, diag=True)

    t.heading("4. snapshot: the volume's tgz vs bsdtar czf of the same tree")
    t.value("bsdtar czf + fsync", "snap.bsdtar", "s",
            note=t.note([("{}", "snap.bsdtar.mibs", "MiB/s"), ("CPU {}", "snap.bsdtar.cpu", "s")]))
    t.value("bsdtar czf, gzip level 1 (backupd's default) + fsync", "snap.bsdtar1", "s",
            note=t.note([("CPU {}", "snap.bsdtar1.cpu", "s")]))
    t.value("backupd snapshot", "snap.backupd", "s",
            note=t.note([("{}", "snap.backupd.mibs", "MiB/s")]))
    t.ratio("snapshot speed vs bsdtar (bsdtar s / backupd s)", "snap.bsdtar", "snap.backupd",
            TARGET_PLL)

    build_restart(t)
    build_memory(t)


def fs_load(t):
    """The machine's 1-minute load average sampled after each configuration: per round the
    highest, per configuration the median in the note (2 cores: above 2, something else ran)."""
    per_round = defaultdict(list)
    parts = []
    for k in sorted(k for k in t.d.vals if k.startswith("fs.load.")):
        for r, v in t.d.vals[k].items():
            per_round[r].append(v)
        parts.append(f"{k[len('fs.load.'):]} {t.d.median(k):.2f}")
    t.add("1-minute load average after a configuration, highest of the round",
          [max(per_round[r]) for r in sorted(per_round)], "",
          note=("median after " + ", ".join(parts)) if parts else "")


def untar_requests(t, cfg, name, diag=False):
    """FUSE requests per untarred entry (fuse_request_send), the top opcodes in the note."""
    key = f"fs.untar_requests.{cfg}"
    ops = sorted(((t.d.median(k), k[len(key) + 1:]) for k in t.d.vals
                  if k.startswith(key + ".FUSE_")), reverse=True)
    note = ", ".join(f"{op[5:]} {v:.2f}" for v, op in ops[:6])
    t.value(f"FUSE requests per untarred entry: {name}", key, "", diag=diag,
            note=f"per entry: {note}" if note else "")


RESTART_ROWS = (
    ("fs_clean", "backupfs clean restart"),
    ("fs_kill", "backupfs kill -9, changed while down"),
    ("bd_term", "backupd restart (SIGTERM)"),
    ("bd_kill", "backupd restart (kill -9)"),
)


def build_restart(t):
    d = t.d
    t.heading("5. restart: a reconcile (manifests + block digests) against the full baseline of "
              "the same volume, 2 replicas; wire = TCP payload both ways per hop")
    base = "rst.base"
    t.value("full baseline: mirror converged after (mount to mirror)", f"{base}.mirror", "s",
            note=t.note([("volume {}", "rst.volume", "bytes"),
                         ("backupd attached after {}", f"{base}.attached", "s")]))
    t.value("full baseline: both replicas converged after", f"{base}.replicas", "s",
            note=t.note([("r1 {}", f"{base}.r1", "s"), ("r2 {}", f"{base}.r2", "s")]))
    t.value("full baseline: bytes on the wire, node <-> backupd", f"{base}.wire.node", "bytes",
            note=t.note([("backupd stats: frames {}", f"{base}.stats.wire", "bytes"),
                         ("file data {}", f"{base}.stats.data", "bytes")]))
    t.value("full baseline: bytes on the wire, backupd <-> each replica (max)",
            f"{base}.wire.replica", "bytes",
            note=t.note([("r1 {}", f"{base}.wire.r1", "bytes"),
                         ("r2 {}", f"{base}.wire.r2", "bytes")]))
    t.value("full baseline: bytes read from disk by backupfs", f"{base}.read.backupfs", "bytes",
            note=t.note([("backupd {}", f"{base}.read.backupd", "bytes"),
                         ("r1 {}", f"{base}.read.r1", "bytes"),
                         ("r2 {}", f"{base}.read.r2", "bytes")]))
    for row, label in RESTART_ROWS:
        k = f"rst.{row}"
        for copy, what, base_key in (("mirror", "mirror converged after", f"{base}.mirror"),
                                     ("replicas", "both replicas converged after",
                                      f"{base}.replicas")):
            limit = d.median(base_key)
            target = ("<=", 0.10, f"<= 10% of baseline ({fmt_num(limit and limit * 0.1, 's')})")
            ratios = d.per_round(lambda a, b: a / b, f"{k}.{copy}", base_key)
            parts = []
            if ratios:
                parts.append(f"{statistics.median(ratios) * 100:.1f}% of the baseline")
            if copy == "mirror":
                parts.append(t.note([("backupd attached after {}", f"{k}.attached", "s")]))
                after = d.per_round(lambda c, a: c - a, f"{k}.mirror", f"{k}.attached")
                if after and row.startswith("fs_"):
                    parts.append(f"{fmt_num(statistics.median(after), 's')} after attaching")
            else:
                parts.append(t.note([("r1 {}", f"{k}.r1", "s"), ("r2 {}", f"{k}.r2", "s")]))
                c1, c2 = d.median(f"{k}.r1_connected"), d.median(f"{k}.r2_connected")
                if c1 is not None and c2 is not None:
                    parts.append(f"replicators reconnected after {fmt_num(c1, 's')} / "
                                 f"{fmt_num(c2, 's')}")
            t.add(f"{label}: {what}", d.rounds(f"{k}.{copy}"), "s", target,
                  ", ".join(p for p in parts if p), d.skipped(f"{k}.{copy}"), judged=ratios)
        vol = d.median("rst.volume")
        changed = d.median(f"{k}.changed") or 0
        limit = vol * 0.01 + changed if vol else None
        ttext = (f"<= 1% of volume + changed ({fmt_num(limit, 'bytes')})" if limit
                 else "<= 1% of volume + changed")
        for hop, what, extra in (
                ("node", "node <-> backupd",
                 [("changed {}", f"{k}.changed", "bytes"),
                  ("backupd stats: frames {}", f"{k}.stats.wire", "bytes"),
                  ("file data {}", f"{k}.stats.data", "bytes")]),
                ("replica", "backupd <-> each replica (max)",
                 [("r1 {}", f"{k}.wire.r1", "bytes"), ("r2 {}", f"{k}.wire.r2", "bytes"),
                  ("data planned by backupd's reconciles (log) {}", f"{k}.logdata", "bytes")])):
            excess = d.per_round(lambda w, c, v: (w - c) / v, f"{k}.wire.{hop}", f"{k}.changed",
                                 "rst.volume")
            t.add(f"{label}: bytes on the wire, {what}", d.rounds(f"{k}.wire.{hop}"), "bytes",
                  ("<=", 0.01, ttext), t.note(extra), d.skipped(f"{k}.wire.{hop}"),
                  judged=excess)
        sender = "backupfs" if row.startswith("fs_") else "backupd"
        others = [r for r in ("backupfs", "backupd", "r1", "r2") if r != sender]
        t.value(f"{label}: bytes read from disk by {sender}", f"{k}.read.{sender}", "bytes",
                note=t.note([(f"{r} {{}}", f"{k}.read.{r}", "bytes") for r in others] +
                            [(f"{sender} rchar {{}}", f"{k}.rchar.{sender}", "bytes")]))
    verified = [v for row in ("base",) + tuple(r for r, _ in RESTART_ROWS)
                for v in d.rounds(f"rst.{row}.verified")]
    if verified or t.section_ran():
        t.add("every copy equals the source after the restarts (bkp_treecmp; 1 = yes)",
              [min(verified)] if verified else [], "", ("==", 1, "1"),
              note=f"{len(verified)} checks" if verified else "")


def build_memory(t):
    d = t.d
    t.heading("6. memory: backupfs with no backupd attached (nothing drains its change log)")
    m = t.meta.get("sizes", {})
    mib, files, ops = m.get("memory_mib", 0), m.get("memory_files", 0), m.get("memory_ops", 0)
    size = f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"
    t.value(f"backupfs peak RSS (VmHWM), {size} written over {files} files + {ops} metadata ops",
            "mem.end.hwm", "bytes", ("<=", 64 * MiB, "<= 64 MiB"),
            note=t.note([("VmRSS at the end {}", "mem.end.rss", "bytes"),
                         ("RssAnon {}", "mem.end.anon", "bytes"),
                         ("at mount {}", "mem.start.rss", "bytes")]))
    t.value("backupfs VmRSS after the writes alone", "mem.writes.rss", "bytes",
            note=t.note([("VmHWM then {}", "mem.writes.hwm", "bytes")]))
    per_op = d.per_round(lambda e, w, n: (e - w) / n, "mem.end.rss", "mem.writes.rss", "mem.ops")
    t.add("backupfs VmRSS growth per metadata operation", per_op, "bytes")


# --- output --------------------------------------------------------------------------------------

def render(t):
    cols = ["measurement", "median", "rounds", "target", "status", "notes"]
    table = []
    for r in t.rows:
        table.append([r["measurement"], fmt_num(r["value"], r["unit"]) if r["value"] is not None
                      else "", fmt_rounds(r["rounds"], r["unit"]), r["target"] or "",
                      r["status"], r["note"]])
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    widths[-1] = len(cols[-1])
    lines = []
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()
    lines += [line, "-" * max(len(line), 100)]
    section = None
    for r, row in zip(t.rows, table):
        if r["section"] != section:
            section = r["section"]
            lines.append(f"== {section}")
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.meta) as f:
        meta = json.load(f)
    t = Table(Data(a.raw), meta)
    build(t)
    print(f"backupfs benchmark, {meta.get('mode')} mode, {meta.get('rounds')} round(s), "
          f"{meta.get('date')}, {meta.get('git')}: {meta.get('nproc')} cores, "
          f"{meta.get('memory')} RAM, kernel {meta.get('kernel')}, {meta.get('filesystem')}, "
          f"load {meta.get('loadavg_start')} -> {meta.get('loadavg_end')}"
          + (", host reclaims freed guest memory (free page reporting)"
             if meta.get("free_page_reporting") else ""))
    print(render(t))
    if a.out.endswith(".csv"):
        with open(a.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["section", "measurement", "value", "unit", "rounds", "target", "status",
                        "note"])
            for r in t.rows:
                w.writerow([r["section"], r["measurement"], r["value"], r["unit"],
                            " ".join(f"{v:g}" for v in r["rounds"]), r["target"] or "",
                            r["status"], r["note"]])
    else:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "rows": t.rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
