#!/usr/bin/env python3
"""The application of kill_matrix.sh: a mixed workload through the backupfs mount that can be
paused, and the check of its fsync'd appends afterwards (stdlib only).

Why a separate program: the fault run must know exactly which appends the application was told
are durable (fsync returned) and must be able to stop between two operations while backupfs is
killed and remounted (kill -9 of backupfs's keeper ends the mount; its worker's death does
not, and the workload runs through those). A single thread that opens and closes every file
within one operation gives both.

  workload.py run --dir MOUNT --ctl DIR --acked FILE [--seed S] [--rate OPS_PER_S]
      Runs until CTL/stop exists. Between two operations: if CTL/pause exists it creates
      CTL/paused (no file of the mount is open then) and waits until CTL/pause is gone, then
      removes CTL/paused. After each fsync'd append it writes "JOURNAL N" to FILE (flushed).
      Prints {"ops": N, "errors": N, "appends": N, "by_kind": {...}} at the end. Exit 1 if any
      operation failed.
  workload.py check --acked FILE TREE...
      Exit 1 unless every acknowledged append is in journal/JOURNAL of every TREE.
  workload.py names SOURCE COPY
      The names only in one of the two trees and the regular files whose mode or content
      differ (counts and the first few; holes not compared): after a failed convergence, what
      a copy lacks, kept or holds differently.

Operations (weights in KINDS): files created or overwritten (0-192 KiB), pwrites into a 16 MiB
file, renames of files (also over existing ones) and of directories, rm -rf of a subtree and
its re-creation under the same name, hard links made and dropped, user.* xattrs set and
removed, chmod, truncate (grow and shrink), symlinks, and fsync'd appends to four journals.
The tree stays bounded (about 600 files, 60 MiB) so the final comparison is quick.
"""
import argparse
import json
import os
import random
import shutil
import sys
import time

KINDS = {
    "write": 20, "pwrite_big": 6, "rename": 10, "rename_over": 4, "rename_dir": 3, "rmtree": 2,
    "link": 6, "unlink_link": 4, "setxattr": 6, "removexattr": 3, "chmod": 5, "truncate": 4,
    "symlink": 3, "unlink": 6, "append": 18,
}
DATA_DIRS = 12          # data/d00 .. data/d11
FILES_PER_DIR = 40      # past this, "write" overwrites instead of creating
TREES = 6               # tree/t0 .. tree/t5: subtrees that get rm -rf'd and recreated
JOURNALS = 4
BIG = "big/db.bin"
BIG_SIZE = 16 << 20


class Workload:
    def __init__(self, a):
        self.root = a.dir
        self.ctl = a.ctl
        self.rng = random.Random(a.seed)
        self.acked = open(a.acked, "a", buffering=1)
        self.rate = a.rate
        self.ops = 0
        self.errors = 0
        self.appends = 0
        self.by_kind = {k: 0 for k in KINDS}
        self.seq = {j: self.last_acked(a.acked, j) for j in range(JOURNALS)}
        self.names = 0

    @staticmethod
    def last_acked(path, j):
        n = 0
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == f"j{j}":
                        n = max(n, int(parts[1]))
        except FileNotFoundError:
            pass
        return n

    def p(self, *parts):
        return os.path.join(self.root, *parts)

    def fresh(self, prefix):
        self.names += 1
        return f"{prefix}{self.names:07d}-{self.rng.randrange(1 << 16):04x}"

    def ls(self, *parts):
        try:
            return sorted(os.listdir(self.p(*parts)))
        except FileNotFoundError:
            return []

    def pick_file(self):
        d = f"d{self.rng.randrange(DATA_DIRS):02d}"
        names = [n for n in self.ls("data", d) if not n.startswith("s")]
        return (os.path.join("data", d, self.rng.choice(names)) if names else None), d

    # --- setup ---
    def setup(self):
        for i in range(DATA_DIRS):
            os.makedirs(self.p("data", f"d{i:02d}"), exist_ok=True)
        for sub in ("links", "journal", "big", "tree"):
            os.makedirs(self.p(sub), exist_ok=True)
        if not os.path.exists(self.p(BIG)):
            with open(self.p(BIG), "wb") as f:
                f.truncate(BIG_SIZE)
        for t in range(TREES):
            if not os.path.isdir(self.p("tree", f"t{t}")):
                self.make_tree(t)

    def make_tree(self, t):
        base = self.p("tree", f"t{t}")
        for i in range(3):
            os.makedirs(os.path.join(base, f"sub{i}", "deeper"), exist_ok=True)
            for k in range(4):
                with open(os.path.join(base, f"sub{i}", f"f{k}"), "wb") as f:
                    f.write(self.rng.randbytes(self.rng.randrange(0, 16 << 10)))
            with open(os.path.join(base, f"sub{i}", "deeper", "leaf"), "wb") as f:
                f.write(self.rng.randbytes(512))

    # --- operations ---
    def op_write(self):
        d = f"d{self.rng.randrange(DATA_DIRS):02d}"
        names = [n for n in self.ls("data", d) if not n.startswith("s")]
        if len(names) >= FILES_PER_DIR:
            rel = os.path.join("data", d, self.rng.choice(names))
        else:
            rel = os.path.join("data", d, self.fresh("f"))
        with open(self.p(rel), "wb") as f:
            f.write(self.rng.randbytes(self.rng.randrange(0, 192 << 10)))

    def op_pwrite_big(self):
        fd = os.open(self.p(BIG), os.O_WRONLY)
        try:
            n = self.rng.randrange(1, 256 << 10)
            os.pwrite(fd, self.rng.randbytes(n), self.rng.randrange(0, BIG_SIZE - n))
        finally:
            os.close(fd)

    def op_rename(self):
        rel, _ = self.pick_file()
        if rel:
            to = os.path.join("data", f"d{self.rng.randrange(DATA_DIRS):02d}", self.fresh("f"))
            os.rename(self.p(rel), self.p(to))

    def op_rename_over(self):
        a, _ = self.pick_file()
        b, _ = self.pick_file()
        if a and b and a != b:
            os.rename(self.p(a), self.p(b))

    def op_rename_dir(self):
        t = self.rng.randrange(TREES)
        sub = self.ls("tree", f"t{t}")
        if len(sub) >= 2:
            a, b = self.rng.sample(sub, 2)
            tmp = self.fresh("sub")
            # a -> tmp, b -> a, tmp -> b: a swap done with plain renames
            os.rename(self.p("tree", f"t{t}", a), self.p("tree", f"t{t}", tmp))
            os.rename(self.p("tree", f"t{t}", b), self.p("tree", f"t{t}", a))
            os.rename(self.p("tree", f"t{t}", tmp), self.p("tree", f"t{t}", b))

    def op_rmtree(self):
        t = self.rng.randrange(TREES)
        shutil.rmtree(self.p("tree", f"t{t}"))
        self.make_tree(t)  # the same names again, new files

    def op_link(self):
        rel, _ = self.pick_file()
        if rel and len(self.ls("links")) < 80:
            os.link(self.p(rel), self.p("links", self.fresh("l")))

    def op_unlink_link(self):
        names = self.ls("links")
        if names:
            os.unlink(self.p("links", self.rng.choice(names)))

    def op_setxattr(self):
        rel, d = self.pick_file()
        target = rel if rel and self.rng.random() < 0.8 else os.path.join("data", d)
        os.setxattr(self.p(target), f"user.k{self.rng.randrange(3)}",
                    self.rng.randbytes(self.rng.randrange(1, 64)))

    def op_removexattr(self):
        rel, _ = self.pick_file()
        if rel:
            names = [n for n in os.listxattr(self.p(rel)) if n.startswith("user.")]
            if names:
                os.removexattr(self.p(rel), self.rng.choice(names))

    def op_chmod(self):
        rel, _ = self.pick_file()
        if rel:
            os.chmod(self.p(rel), self.rng.choice([0o600, 0o640, 0o644, 0o664, 0o755]))

    def op_truncate(self):
        rel, _ = self.pick_file()
        if rel:
            os.truncate(self.p(rel), self.rng.randrange(0, 256 << 10))

    def op_symlink(self):
        d = f"d{self.rng.randrange(DATA_DIRS):02d}"
        syms = [n for n in self.ls("data", d) if n.startswith("s")]
        if len(syms) > 5:
            os.unlink(self.p("data", d, self.rng.choice(syms)))
        else:
            os.symlink(self.fresh("../target-"), self.p("data", d, self.fresh("s")))

    def op_unlink(self):
        rel, _ = self.pick_file()
        if rel:
            os.unlink(self.p(rel))

    def op_append(self):
        j = self.rng.randrange(JOURNALS)
        n = self.seq[j] + 1
        line = f"rec {n} {self.rng.randbytes(24).hex()}\n".encode()
        fd = os.open(self.p("journal", f"j{j}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):
                raise OSError("short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.seq[j] = n
        self.acked.write(f"j{j} {n}\n")  # only now: fsync returned
        self.appends += 1

    # --- loop ---
    def pause_point(self):
        pause = os.path.join(self.ctl, "pause")
        if not os.path.exists(pause):
            return
        paused = os.path.join(self.ctl, "paused")
        open(paused, "w").close()
        deadline = time.time() + 600
        while os.path.exists(pause):
            if time.time() > deadline:
                raise SystemExit("workload: paused for more than 600 s")
            time.sleep(0.02)
        os.unlink(paused)

    def run(self):
        self.setup()
        kinds = list(KINDS)
        weights = [KINDS[k] for k in kinds]
        stop = os.path.join(self.ctl, "stop")
        gap = 1.0 / self.rate if self.rate > 0 else 0
        while not os.path.exists(stop):
            self.pause_point()
            kind = self.rng.choices(kinds, weights)[0]
            t = time.time()
            try:
                getattr(self, "op_" + kind)()
                self.by_kind[kind] += 1
            except OSError as e:
                self.errors += 1
                print(f"workload: {kind} failed: {e}", file=sys.stderr, flush=True)
            self.ops += 1
            left = gap - (time.time() - t)
            if left > 0:
                time.sleep(left)
        print(json.dumps({"ops": self.ops, "errors": self.errors, "appends": self.appends,
                          "by_kind": self.by_kind}))
        return 1 if self.errors else 0


def cmd_run(a):
    return Workload(a).run()


def cmd_check(a):
    want = {}
    with open(a.acked) as f:
        for line in f:
            j, n = line.split()
            want.setdefault(j, set()).add(int(n))
    bad = 0
    for tree in a.trees:
        for j, ns in sorted(want.items()):
            have = set()
            try:
                with open(os.path.join(tree, "journal", f"{j}.log"), "rb") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 3 and parts[0] == b"rec":
                            have.add(int(parts[1]))
            except FileNotFoundError:
                pass
            missing = ns - have
            if missing:
                bad += 1
                print(f"check: {tree}/journal/{j}.log lacks {len(missing)} acknowledged "
                      f"appends, e.g. {sorted(missing)[:5]}", file=sys.stderr)
    total = sum(len(v) for v in want.values())
    print(json.dumps({"acknowledged": total, "trees": len(a.trees), "trees_missing_some": bad}))
    return 1 if bad else 0


def cmd_names(a):
    """Names only in one tree, and regular files in both whose content or mode differ (holes
    are not looked at): what a copy lacks or kept, apart from its hole map."""
    import hashlib
    import stat

    def names(root):
        out = {}
        for d, dirs, files in os.walk(root):
            rel = os.path.relpath(d, root)
            for n in dirs + files:
                out[os.path.normpath(os.path.join(rel, n))] = os.lstat(os.path.join(d, n))
        return out

    def digest(path):
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).digest()

    src, copy = names(a.source), names(a.copy)
    extra, missing = sorted(set(copy) - set(src)), sorted(set(src) - set(copy))
    differ = []
    for n in sorted(set(src) & set(copy)):
        s, c = src[n], copy[n]
        if stat.S_ISREG(s.st_mode) and stat.S_ISREG(c.st_mode):
            if s.st_mode != c.st_mode or s.st_size != c.st_size or \
                    digest(os.path.join(a.source, n)) != digest(os.path.join(a.copy, n)):
                differ.append(n)
        elif stat.S_IFMT(s.st_mode) != stat.S_IFMT(c.st_mode):
            differ.append(n)
    print(json.dumps({"copy": a.copy, "extra": len(extra), "missing": len(missing),
                      "differ": len(differ), "extra_first": extra[:5],
                      "missing_first": missing[:5], "differ_first": differ[:5]}))
    return 1 if extra or missing or differ else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("run")
    s.add_argument("--dir", required=True)
    s.add_argument("--ctl", required=True)
    s.add_argument("--acked", required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--rate", type=float, default=100, help="operations per second at most")
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("check")
    s.add_argument("--acked", required=True)
    s.add_argument("trees", nargs="+")
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("names")
    s.add_argument("source")
    s.add_argument("copy")
    s.set_defaults(fn=cmd_names)
    a = p.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
