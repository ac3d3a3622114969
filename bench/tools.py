#!/usr/bin/env python3
"""Small measuring and data-making helpers for the bench/*.sh scripts (stdlib only).

Why this exists: the shell scripts orchestrate daemons and mounts, but a few jobs need floating
point, precise clocks or tight polling loops that would be slow or unreadable in bash. Each job is
a subcommand that prints one JSON object (or a number) on stdout for the caller to record:

  gen-tarball OUT --entries N          deterministic tar of a source-like tree (dirs + small files)
  gen-dataset DIR --large K --large-mib M --small N
                                       deterministic dataset: K large files, N small ones
  listing DIR                          metadata listing used to decide "converged"
  wait-converged --listing F --copy NAME=DIR ... --t0 T
                                       polls copies until their metadata equals the source's
  verify SRC COPY...                   byte-for-byte content compare (exit 1 on a difference)
  change-plan --pick-from DIR --mount DIR --round R --out PLAN
                                       picks the incremental change, opens its files via the mount
  change --plan PLAN --mount DIR --copy NAME=DIR ...
                                       makes that change through the mount and times its arrival
                                       in each copy
  wait-idle --pid P ... [--stats F]    waits until daemons stop using CPU and stats stop moving
  measure --out F -- CMD...            runs CMD; wall, CPU, maxrss and /proc io of it and its
                                       (waited-for) children
  proc PID                             cpu seconds, io counters and VmHWM of a running process
                                       and its descendants
  stats FILE                           backupd's per-volume stats file as JSON
  relay --target PORT --rate R --port-file F
                                       TCP relay on 127.0.0.1 passing at most R MiB/s to clients
  history-run --after-last | --written-after ID
                                       picks a snapshot run out of `bkptool --json history`
  net-bytes --pid P [--before F] [--save F]
                                       TCP payload bytes (sent + received) of the established
                                       sockets of P and its descendants (ss -tinp), minus what
                                       --before saved
  log-bytes FILE --from OFFSET         data bytes backupd's reconciles of replicas planned, from
                                       its log ("reconcile of ..." minus "already there")
  modify DIR --round R --small K       rewrites 1 MiB inside one large file and K small files of
                                       the dataset in place (the restart section's change)
  write-files DIR --files N --mib M    M MiB of 1 MiB writes spread over N new files
  churn DIR --ops N                    N metadata operations: creates, renames, chmods, unlinks

Deterministic data: every generator is seeded, so two runs (and two machines) measure the same
bytes and the same tree shape.
"""
import argparse
import json
import os
import sys
import time

# hashlib, io, random, subprocess and tarfile are imported by the subcommands that use them: the
# scripts call this file ~100 times per run, and on a busy 2-core machine every import shows.

CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20


# --- /proc readers --------------------------------------------------------------------------

def proc_tree(pid):
    """pid and its live descendants. A daemon's figures are its whole tree's: `backupfs DIR` is a
    keeper (fs/keeper.h) whose worker child does the work (lib.sh proc_tree says the same)."""
    out, i = [pid], 0
    while i < len(out):
        try:
            tasks = os.listdir(f"/proc/{out[i]}/task")
        except OSError:
            tasks = []
        for t in tasks:
            try:
                with open(f"/proc/{out[i]}/task/{t}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
        i += 1
    return out


def proc_cpu(pid):
    """CPU seconds of the process tree: utime+stime (all threads) + cutime+cstime (reaped
    children). Raises OSError if pid itself is gone."""
    total = 0.0
    for i, p in enumerate(proc_tree(pid)):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            if i == 0:
                raise
            continue
        total += sum(int(x) for x in rest[11:15]) / CLK_TCK
    return total


def proc_io(pid):
    """/proc/PID/io as a dict (rchar, wchar, read_bytes, write_bytes, ...), summed over the tree
    (a reaped child's counters are already in its parent's)."""
    out = {}
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/io") as f:
                for line in f:
                    k, v = line.split(":")
                    out[k.strip()] = out.get(k.strip(), 0) + int(v)
        except OSError:
            pass
    return out


def proc_hwm_kib(pid):
    """VmHWM summed over the tree (an upper bound on the tree's peak)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
        except OSError:
            pass
    return total


def read_stats(path):
    """backupd's stats file: 'wire_bytes N\\ndata_bytes N\\n...' -> dict (zeros if absent)."""
    out = {"wire_bytes": 0, "data_bytes": 0, "ops": 0, "batches": 0}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    out[parts[0]] = int(parts[1])
    except FileNotFoundError:
        pass
    return out


# --- data generators --------------------------------------------------------------------------

def text_bytes(rng, n):
    """Compressible, source-code-like bytes (so tar/gzip see realistic content)."""
    words = [b"int", b"return", b"const", b"static", b"void", b"struct", b"if", b"for",
             b"while", b"0x1f", b"bkp", b"size_t", b"std::string", b"{", b"}", b"(", b");"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def cmd_gen_tarball(a):
    """A tar of ~N entries: one dir per ~10 files, sizes lognormal around 2 KiB, fixed mtimes."""
    import io
    import random
    import tarfile
    rng = random.Random(a.seed)
    entries = 0
    mtime = 1_700_000_000
    with tarfile.open(a.out, "w", format=tarfile.GNU_FORMAT) as tar:
        def add(name, data=None):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("src")
        entries = 1
        d = 0
        while entries < a.entries:
            top = f"src/mod{d // 20:03d}"
            if d % 20 == 0:
                add(top)
                entries += 1
            sub = f"{top}/pkg{d:04d}"
            add(sub)
            entries += 1
            for i in range(min(9, a.entries - entries)):
                size = min(64 * 1024, int(rng.lognormvariate(7.6, 1.0)))
                add(f"{sub}/file{i}.c", text_bytes(rng, size))
                entries += 1
            d += 1
    print(json.dumps({"entries": entries, "bytes": os.path.getsize(a.out)}))


def cmd_gen_dataset(a):
    """K large incompressible files and N small ones (in dirs of 100), seeded."""
    import random
    rng = random.Random(a.seed)
    total = 0
    os.makedirs(os.path.join(a.dir, "large"), exist_ok=True)
    for k in range(a.large):
        with open(os.path.join(a.dir, "large", f"big{k}.db"), "wb") as f:
            for _ in range(a.large_mib):
                f.write(rng.randbytes(MiB))
        total += a.large_mib * MiB
    for i in range(a.small):
        d = os.path.join(a.dir, "small", f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        size = min(64 * 1024, int(rng.lognormvariate(8.8, 1.0)))
        with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
            f.write(rng.randbytes(size))
        total += size
    print(json.dumps({"bytes": total, "files": a.large + a.small}))


# --- convergence ------------------------------------------------------------------------------

def listing(root):
    """Sorted (path, type, size, mtime_ns, mode) of every entry below root.

    Directory sizes are left out (they depend on the directory's history, not its content).
    The applier sets a file's mtime after its data, so equal listings mean the data is there
    too (verify() checks the bytes once afterwards)."""
    out = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            for e in it:
                p = os.path.join(rel, e.name)
                st = e.stat(follow_symlinks=False)
                if e.is_dir(follow_symlinks=False):
                    stack.append(p)
                    out.append((p, "d", 0, st.st_mtime_ns, st.st_mode))
                else:
                    out.append((p, "f", st.st_size, st.st_mtime_ns, st.st_mode))
    out.sort()
    return out


def sample_of(entries, n=48):
    """The entries worth checking first: the largest files plus a deterministic spread."""
    files = [e for e in entries if e[1] == "f"]
    big = sorted(files, key=lambda e: -e[2])[:8]
    step = max(1, len(files) // n)
    return big + files[::step][:n]


def sample_matches(root, sample):
    for p, _, size, mtime, mode in sample:
        try:
            st = os.lstat(os.path.join(root, p))
        except OSError:
            return False
        if st.st_size != size or st.st_mtime_ns != mtime or st.st_mode != mode:
            return False
    return True


def cmd_listing(a):
    json.dump(listing(a.dir), sys.stdout)


def log_has(path, offset, regex):
    """True if the file, from byte offset on, has a line matching regex."""
    import re
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    return re.search(regex, text, re.MULTILINE) is not None


def cmd_wait_converged(a):
    """Seconds from --t0 until each copy's listing equals the source listing.

    Cheap first: a sample of files (the large ones and a spread of small ones) is stat'ed every
    --interval; only when the sample matches is the whole tree listed. This keeps the polling from
    stealing a core from the daemons being measured.

    --marker NAME FILE OFFSET REGEX (repeatable): copy NAME also waits until FILE, from byte
    OFFSET on, has a line matching REGEX (a daemon saying its reconcile ended: a restart that
    changed nothing leaves the trees equal from the start). A copy given as NAME=- has only its
    markers, no tree (e.g. "attached")."""
    with open(a.listing) as f:
        want = [tuple(e) for e in json.load(f)]
    sample = sample_of(want)
    pending = dict(c.split("=", 1) for c in a.copy)
    markers = {}
    for name, path, offset, regex in a.marker:
        markers.setdefault(name, []).append((path, int(offset), regex))
    done = {}
    deadline = time.time() + a.timeout
    while pending and time.time() < deadline:
        for name, root in list(pending.items()):
            if not all(log_has(*m) for m in markers.get(name, [])):
                continue
            if root != "-":
                if not os.path.isdir(root) or not sample_matches(root, sample):
                    continue
                if listing(root) != want:
                    continue
            done[name] = round(time.time() - a.t0, 3)
            del pending[name]
        if pending:
            time.sleep(a.interval)
    for name in pending:
        done[name] = None
    print(json.dumps(done))
    return 0 if not pending else 1


def file_digest(path):
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.digest()


def cmd_verify(a):
    """Byte-for-byte compare of the source with each copy (content and metadata listing)."""
    want = listing(a.src)
    bad = 0
    for copy in a.copies:
        if listing(copy) != want:
            print(f"verify: metadata of {copy} differs from {a.src}", file=sys.stderr)
            bad += 1
            continue
        for p, kind, *_ in want:
            if kind == "f" and file_digest(os.path.join(a.src, p)) != file_digest(
                    os.path.join(copy, p)):
                print(f"verify: {copy}/{p} differs", file=sys.stderr)
                bad += 1
                break
    return 1 if bad else 0


def cmd_change_plan(a):
    """Picks round R's change and opens its files through the mount, as the application that
    works on them would have: 1 MiB at a 4 KiB-aligned offset inside one large file, and 10 small
    files to touch. Files are picked by listing --pick-from (the real directory, not the mount), so
    the benchmark's own directory listings are not counted as backupfs's reads."""
    import random
    rng = random.Random(1000 + a.round)
    bigs = sorted(os.listdir(os.path.join(a.pick_from, "large")))
    big = os.path.join("large", bigs[a.round % len(bigs)])
    size = os.path.getsize(os.path.join(a.pick_from, big))
    offset = rng.randrange(0, (size - MiB) // 4096) * 4096
    small_dirs = sorted(os.listdir(os.path.join(a.pick_from, "small")))
    touched = []
    while len(touched) < 10:
        d = os.path.join("small", rng.choice(small_dirs))
        name = os.path.join(d, rng.choice(sorted(os.listdir(os.path.join(a.pick_from, d)))))
        if name not in touched:
            touched.append(name)
    for name in [big] + touched:
        os.stat(os.path.join(a.mount, name))
    with open(a.out, "w") as f:
        json.dump({"big": big, "offset": offset, "data_seed": 2000 + a.round,
                   "touched": touched}, f)


def cmd_change(a):
    """Makes a planned change (change-plan) through the mount, then times its arrival in each
    copy: polls every copy every few ms until the large file's range holds the new bytes and the
    10 small files carry the new mtimes."""
    import random
    with open(a.plan) as f:
        plan = json.load(f)
    big, offset, touched = plan["big"], plan["offset"], plan["touched"]
    data = random.Random(plan["data_seed"]).randbytes(MiB)

    t0 = time.time()
    with open(os.path.join(a.mount, big), "r+b") as f:
        f.seek(offset)
        f.write(data)
    for name in touched:
        os.utime(os.path.join(a.mount, name))
    t_written = time.time() - t0
    want_mtime = {n: os.lstat(os.path.join(a.mount, n)).st_mtime_ns for n in touched}

    pending = dict(c.split("=", 1) for c in a.copy)
    arrived = {}
    deadline = t0 + a.timeout
    while pending and time.time() < deadline:
        for name, root in list(pending.items()):
            try:
                with open(os.path.join(root, big), "rb") as f:
                    f.seek(offset)
                    ok = f.read(MiB) == data
                ok = ok and all(os.lstat(os.path.join(root, n)).st_mtime_ns == m
                                for n, m in want_mtime.items())
            except OSError:
                ok = False
            if ok:
                arrived[name] = round(time.time() - t0, 4)
                del pending[name]
        time.sleep(0.002)
    for name in pending:
        arrived[name] = None
    print(json.dumps({"t0": t0, "write_s": round(t_written, 4), "arrived": arrived,
                      "file": big, "offset": offset}))
    return 0 if not pending else 1


def cmd_wait_idle(a):
    """Waits until the given daemons used at most one clock tick of CPU each over --window and
    the stats file (if any) did not change; prints seconds waited (excluding the final window)."""
    t0 = time.time()
    deadline = t0 + a.timeout

    def sample():
        cpu = []
        for p in a.pid:
            try:
                cpu.append(proc_cpu(p))
            except OSError:
                cpu.append(-1.0)
        stats = read_stats(a.stats) if a.stats else None
        return cpu, stats

    last_busy = time.time()
    prev = sample()
    while time.time() < deadline:
        time.sleep(a.window / 3)
        cur = sample()
        moved = cur[1] != prev[1] or any(c - p > 1.5 / CLK_TCK for c, p in zip(cur[0], prev[0]))
        if moved:
            last_busy = time.time()
            prev = cur
        elif time.time() - last_busy >= a.window:
            print(round(max(0.0, last_busy - t0), 3))
            return 0
    print(-1)
    return 1


def cmd_measure(a):
    """Runs the command and reports what it cost, children included.

    The kernel adds a reaped child's io counters to its parent's, so the delta of our own
    /proc/self/io over fork..wait covers the command and every descendant it waited for."""
    import subprocess
    io0 = proc_io("self")
    t0 = time.time()
    with open(a.stdout or os.devnull, "wb") as out:
        argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    io1 = proc_io("self")
    res = {
        "rc": child.returncode,
        "wall": round(wall, 4),
        "cpu": round(ru.ru_utime + ru.ru_stime, 3),
        "maxrss_kib": ru.ru_maxrss,
        "rchar": io1["rchar"] - io0["rchar"],
        "read_bytes": io1["read_bytes"] - io0["read_bytes"],
        "wchar": io1["wchar"] - io0["wchar"],
        "write_bytes": io1["write_bytes"] - io0["write_bytes"],
    }
    print(json.dumps(res))
    return 0 if child.returncode == 0 else 1


def cmd_history_run(a):
    """Reads `bkptool --json history` on stdin. --after-last: the newest run's id (0 if none).
    --written-after ID: the seconds of the first finished run after ID that wrote a snapshot
    (exit 1 if there is none yet)."""
    runs = json.load(sys.stdin).get("runs", [])
    if a.written_after is None:
        print(max((r["id"] for r in runs), default=0))
        return 0
    for r in sorted(runs, key=lambda r: r["id"]):
        if r["id"] > a.written_after and r.get("status") == "written" and r.get("ended_at"):
            print(r["duration_ms"] / 1000)
            return 0
    return 1


def ss_sockets():
    """{(pid, local, peer): payload bytes sent + received} of every established TCP socket."""
    import re
    import subprocess
    out = subprocess.run(["ss", "-tinHp", "state", "established"], capture_output=True,
                         text=True, timeout=30).stdout
    socks = {}
    cur = []
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            parts = line.split()
            # Recv-Q Send-Q Local Peer users:(...): "state established" drops the State column
            local, peer = parts[2], parts[3]
            cur = [(int(p), local, peer) for p in set(re.findall(r"pid=(\d+)", line))]
            continue
        sent = re.search(r"bytes_sent:(\d+)", line)
        recv = re.search(r"bytes_received:(\d+)", line)
        n = (int(sent.group(1)) if sent else 0) + (int(recv.group(1)) if recv else 0)
        for key in cur:
            socks[key] = n
        cur = []
    return socks


def cmd_net_bytes(a):
    """Bytes on the wire of the given processes' TCP connections: the payload each of their
    established sockets sent and received (tcp_info, via ss), summed. With --before, only what
    moved since that sample: a socket that existed then counts its growth, a new one (a
    reconnect, a restarted process) all of it. Connections that opened and closed between two
    samples are not seen (nothing in this benchmark's restarts does that with data)."""
    pids = {p for pid in a.pid for p in proc_tree(pid)}
    now = {k: v for k, v in ss_sockets().items() if k[0] in pids}
    before = {}
    if a.before:
        with open(a.before) as f:
            before = {tuple(k): v for k, v in json.load(f)}
    total = sum(max(0, v - before.get(k, 0)) for k, v in now.items())
    if a.save:
        with open(a.save, "w") as f:
            json.dump([[list(k), v] for k, v in now.items()], f)
    print(total)


def cmd_log_bytes(a):
    """backupd's replica reconciles in its log from --from on: the data bytes they planned
    ("reconcile of V: ... N files, B bytes") minus what block digests found already there
    ("... verified by block digests, K bytes already there")."""
    import re
    with open(a.file, "rb") as f:
        f.seek(a.start)
        text = f.read().decode(errors="replace")
    planned = sum(int(m) for m in re.findall(r"reconcile of \S+: .* files, (\d+) bytes", text))
    kept = sum(int(m) for m in re.findall(r"verified by block digests, (\d+) bytes already there",
                                          text))
    print(json.dumps({"planned": planned, "kept": kept, "data": planned - kept}))


def cmd_modify(a):
    """The change made behind a stopped backupfs's back: 1 MiB of new bytes at a 4 KiB-aligned
    offset inside one large file, and K small files rewritten whole (same size, new bytes), in
    the bare directory. Deterministic per round. Prints the bytes written."""
    import random
    rng = random.Random(3000 + a.round)
    bigs = sorted(os.listdir(os.path.join(a.dir, "large")))
    big = os.path.join(a.dir, "large", bigs[a.round % len(bigs)])
    size = os.path.getsize(big)
    n = min(MiB, size)
    offset = rng.randrange(0, max(1, (size - n) // 4096)) * 4096
    with open(big, "r+b") as f:
        f.seek(offset)
        f.write(rng.randbytes(n))
    changed = n
    small_dirs = sorted(os.listdir(os.path.join(a.dir, "small")))
    done = set()
    while len(done) < a.small:
        d = os.path.join(a.dir, "small", rng.choice(small_dirs))
        name = os.path.join(d, rng.choice(sorted(os.listdir(d))))
        if name in done:
            continue
        done.add(name)
        size = os.path.getsize(name)
        with open(name, "r+b") as f:
            f.write(rng.randbytes(size))
        changed += size
    print(json.dumps({"changed": changed, "big": os.path.relpath(big, a.dir),
                      "offset": offset, "small": len(done)}))


def cmd_write_files(a):
    """--mib MiB of 1 MiB writes spread over --files new files (round-robin, so every file
    stays open and growing), then each file closed."""
    os.makedirs(a.dir, exist_ok=True)
    chunk = os.urandom(MiB)
    files = [open(os.path.join(a.dir, f"w{i:04d}.bin"), "wb", buffering=0)
             for i in range(a.files)]
    try:
        for i in range(a.mib):
            files[i % a.files].write(chunk)
    finally:
        for f in files:
            f.close()
    print(json.dumps({"bytes": a.mib * MiB, "files": a.files}))


def cmd_churn(a):
    """--ops metadata operations in a cycle of create, rename, chmod, unlink: each file is
    created in one directory, renamed into another, chmod'ed, and unlinked a few steps later,
    so the tree stays small while the operations pile up in the change log."""
    da, db = os.path.join(a.dir, "churn-a"), os.path.join(a.dir, "churn-b")
    os.makedirs(da, exist_ok=True)
    os.makedirs(db, exist_ok=True)
    live = []  # renamed files, oldest first
    n = created = 0
    while n < a.ops:
        kind = n % 4
        if kind == 0:
            fd = os.open(os.path.join(da, f"f{created:06d}"), os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            created += 1
        elif kind == 1:
            name = f"f{created - 1:06d}"
            os.rename(os.path.join(da, name), os.path.join(db, name))
            live.append(name)
        elif kind == 2:
            os.chmod(os.path.join(db, live[-1]), 0o600)
        else:
            if len(live) > 8:
                os.unlink(os.path.join(db, live.pop(0)))
            else:
                os.chmod(os.path.join(db, live[-1]), 0o640)
        n += 1
    print(json.dumps({"ops": n, "files_left": len(live)}))


def cmd_relay(a):
    """A TCP relay to 127.0.0.1:TARGET that passes at most RATE MiB/s from the target to each
    client connection: one replica "behind its own link" for the parallel-restore rows."""
    import asyncio

    async def pump(reader, writer, rate):
        budget_start, sent = time.monotonic(), 0
        try:
            while data := await reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()
                if rate:
                    sent += len(data)
                    ahead = sent / (rate * MiB) - (time.monotonic() - budget_start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", a.target)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, sw, 0), pump(sr, cw, a.rate))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with open(a.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.rename(a.port_file + ".tmp", a.port_file)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def cmd_proc(a):
    print(json.dumps({"cpu": proc_cpu(a.pid), "hwm_kib": proc_hwm_kib(a.pid), **proc_io(a.pid)}))


def cmd_stats(a):
    print(json.dumps(read_stats(a.file)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("gen-tarball")
    s.add_argument("out")
    s.add_argument("--entries", type=int, default=15000)
    s.add_argument("--seed", type=int, default=42)
    s.set_defaults(fn=cmd_gen_tarball)
    s = sub.add_parser("gen-dataset")
    s.add_argument("dir")
    s.add_argument("--large", type=int, default=4)
    s.add_argument("--large-mib", type=int, default=448)
    s.add_argument("--small", type=int, default=20000)
    s.add_argument("--seed", type=int, default=7)
    s.set_defaults(fn=cmd_gen_dataset)
    s = sub.add_parser("relay")
    s.add_argument("--target", type=int, required=True)
    s.add_argument("--rate", type=float, default=0, help="MiB/s target -> client (0: no limit)")
    s.add_argument("--port-file", required=True)
    s.set_defaults(fn=cmd_relay)
    s = sub.add_parser("listing")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_listing)
    s = sub.add_parser("wait-converged")
    s.add_argument("--listing", required=True)
    s.add_argument("--copy", action="append", default=[], help="NAME=DIR")
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--timeout", type=float, default=900)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--marker", nargs=4, action="append", default=[],
                   metavar=("NAME", "FILE", "OFFSET", "REGEX"))
    s.set_defaults(fn=cmd_wait_converged)
    s = sub.add_parser("verify")
    s.add_argument("src")
    s.add_argument("copies", nargs="+")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("change-plan")
    s.add_argument("--pick-from", required=True)
    s.add_argument("--mount", required=True)
    s.add_argument("--round", type=int, default=0)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_change_plan)
    s = sub.add_parser("change")
    s.add_argument("--plan", required=True)
    s.add_argument("--mount", required=True)
    s.add_argument("--copy", action="append", default=[], help="NAME=DIR")
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_change)
    s = sub.add_parser("wait-idle")
    s.add_argument("--pid", action="append", type=int, default=[])
    s.add_argument("--stats")
    s.add_argument("--window", type=float, default=0.6)
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(fn=cmd_wait_idle)
    s = sub.add_parser("measure")
    s.add_argument("--stdout")
    s.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    s.set_defaults(fn=cmd_measure)
    s = sub.add_parser("history-run")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--after-last", action="store_true")
    g.add_argument("--written-after", type=int)
    s.set_defaults(fn=cmd_history_run)
    s = sub.add_parser("net-bytes")
    s.add_argument("--pid", action="append", type=int, default=[])
    s.add_argument("--before")
    s.add_argument("--save")
    s.set_defaults(fn=cmd_net_bytes)
    s = sub.add_parser("log-bytes")
    s.add_argument("file")
    s.add_argument("--from", dest="start", type=int, default=0)
    s.set_defaults(fn=cmd_log_bytes)
    s = sub.add_parser("modify")
    s.add_argument("dir")
    s.add_argument("--round", type=int, default=0)
    s.add_argument("--small", type=int, default=8)
    s.set_defaults(fn=cmd_modify)
    s = sub.add_parser("write-files")
    s.add_argument("dir")
    s.add_argument("--files", type=int, required=True)
    s.add_argument("--mib", type=int, required=True)
    s.set_defaults(fn=cmd_write_files)
    s = sub.add_parser("churn")
    s.add_argument("dir")
    s.add_argument("--ops", type=int, required=True)
    s.set_defaults(fn=cmd_churn)
    s = sub.add_parser("proc")
    s.add_argument("pid")
    s.set_defaults(fn=cmd_proc)
    s = sub.add_parser("stats")
    s.add_argument("file")
    s.set_defaults(fn=cmd_stats)
    a = p.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
