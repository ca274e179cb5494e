"""Helpers of tests/test_crash.py: kill `emrboot run` at a chosen point (strace fault injection on
its renames, PATH shims around the programs it runs), and describe what a node holds so that a
re-run after the kill can be compared with an uninterrupted run.

Not fixtures; the netbench and node fixtures are in conftest.py.
"""
import os
import re
import signal
import stat
import time
from pathlib import Path

from install_kit import sha256_file
from bench import pids_with_argv

# What emrboot's atomic writes leave beside a target when killed between writing and renaming
# (crates/emrboot-os/src/atomic.rs): `.<name>.tmp.<pid>`, `.<name>.link.<pid>`.
TEMP_RE = re.compile(r"^\..+\.(tmp|link)\.\d+$")
# The scratch dir of one source build (crates/emrboot-phases/src/install/source.rs).
WORK_RE = re.compile(r"^work-.+-\d+$")
RENAMES = "rename,renameat,renameat2"
BIG = 1 << 20  # files above this are compared by size (the kept emrboot binary is ~60 MB)


# -- strace: SIGKILL at the k-th rename --------------------------------------------------------------

def strace_argv(argv, trace_file, kill_at=None):
    """strace ARGV, writing the renames of its initial thread to TRACE_FILE; with KILL_AT=K the
    process gets SIGKILL when it enters its K-th rename (so the rename does not happen).

    Neither -f nor -P: strace 6.1 matches only the first path of rename(2) against -P, which is
    the temporary name (it carries the pid), so a target cannot be picked by its path. Instead
    the count runs over emrboot's initial thread alone, where a run makes all of its renames
    (commands::dispatch is block_on'd there; `rename_targets` checks that on the reference
    trace). Children (tar, sh, iptables) are not traced, so nothing of theirs is counted."""
    out = ["strace", "-qq", "-o", str(trace_file), "-e", f"trace={RENAMES}"]
    if kill_at is not None:
        out += ["-e", f"inject={RENAMES}:signal=KILL:when={kill_at}"]
    return out + ["--", *map(str, argv)]


def reference_argv(argv, trace_file):
    """strace -f ARGV, writing its renames and execs to TRACE_FILE: for `rename_targets`."""
    return ["strace", "-f", "-qq", "-o", str(trace_file), "-e", f"trace={RENAMES},execve", "--", *map(str, argv)]


_SYSCALL_RE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)\)\s+=\s+(.*)$")
_STR_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def rename_targets(trace_text):
    """The target path of each rename in a `strace -f` trace made by the traced program's first
    process, in order. Fails if a thread of that process other than the first renamed anything
    (such renames could not be reached by `strace_argv`'s count)."""
    main, execs, main_renames, other = None, set(), [], []
    for line in trace_text.splitlines():
        m = _SYSCALL_RE.match(line.strip())
        if not m:
            continue
        tid, call, args, result = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if call == "execve":
            if main is None:
                main = tid
            execs.add(tid)
            continue
        if call not in RENAMES.split(",") or not result.startswith("0"):
            continue
        paths = _STR_RE.findall(args)
        (main_renames if tid == main else other).append((tid, paths[-1]))
    # A tid that never exec'd is a thread of emrboot (its children all exec something).
    threads = [(tid, p) for tid, p in other if tid not in execs]
    assert not threads, f"renames off emrboot's main thread, which the kill count cannot reach: {threads}"
    return [p for _, p in main_renames]


def killed_by_sigkill(returncode, trace_file=None):
    """'' when the process (strace or emrboot itself) died by SIGKILL, else what happened."""
    if returncode != -signal.SIGKILL:
        return f"exit {returncode}, not SIGKILL"
    if trace_file is not None:
        text = Path(trace_file).read_text(errors="replace")
        if "+++ killed by SIGKILL +++" not in text:
            return f"strace did not report a SIGKILL:\n{text[-2000:]}"
    return ""


# -- PATH shims: SIGKILL emrboot around the k-th program it runs -----------------------------------

SHIM = """#!/bin/sh
# crash_kit shim for {name}: with $CRASH_CALLS set, appends this call to it and, at call number
# $CRASH_KILL_AT, SIGKILLs emrboot (its parent, or its grandparent when a build step runs under
# emrboot's step supervisor) before or after running {real} ($CRASH_KILL_WHEN). Otherwise only
# execs {real}.
if [ -n "$CRASH_CALLS" ]; then
    EMRBOOT_PID=$PPID
    if tr '\0' ' ' < /proc/$PPID/cmdline | grep -q __emrboot-supervise-step; then
        EMRBOOT_PID=$(awk '{{print $4}}' /proc/$PPID/stat)
    fi
    echo "{name} $*" >> "$CRASH_CALLS"
    n=$(wc -l < "$CRASH_CALLS")
    if [ "$n" -eq "${{CRASH_KILL_AT:-0}}" ]; then
        if [ "$CRASH_KILL_WHEN" = before ]; then
            kill -KILL "$EMRBOOT_PID"
            exit 137
        fi
        "{real}" "$@"
        rc=$?
        kill -KILL "$EMRBOOT_PID"
        exit $rc
    fi
fi
exec "{real}" "$@"
"""


def write_shims(bindir, programs):
    """BINDIR/<name> for each {name: real path}; put BINDIR first on PATH."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    for name, real in programs.items():
        p = bindir / name
        p.write_text(SHIM.format(name=name, real=real))
        p.chmod(0o755)
    return bindir


def shim_env(env, bindir, calls, kill_at=0, when="before"):
    """ENV with the shims first on PATH, counting into CALLS (emptied), killing at call KILL_AT
    (0: never)."""
    Path(calls).write_text("")
    return {**env, "PATH": f"{bindir}:{env.get('PATH', os.defpath)}", "CRASH_CALLS": str(calls),
            "CRASH_KILL_AT": str(kill_at), "CRASH_KILL_WHEN": when}


# -- what a node holds ----------------------------------------------------------------------------------

def files(top, volatile=()):
    """{relative path: description} of everything under TOP: ('dir', mode), ('link', target),
    ('file', mode, sha256), or ('file', mode) for VOLATILE paths (regexes matched against the
    relative path: files whose content holds a time or a pid), ('file', mode, size) for big ones.
    None when TOP does not exist. Leftovers of a killed run are not listed: `debris` finds them."""
    top = Path(top)
    if not top.exists():
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not _is_debris(d, True)]
        for name in dirnames + [f for f in filenames if not _is_debris(f, False)]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(top))
            st = os.lstat(p)
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode)
            elif any(re.fullmatch(v, rel) for v in volatile):
                out[rel] = ("file", mode)
            elif st.st_size > BIG:
                out[rel] = ("file", mode, st.st_size)
            else:
                out[rel] = ("file", mode, sha256_file(p))
    return out


def _is_debris(name, is_dir):
    return bool(TEMP_RE.match(name) or (is_dir and WORK_RE.match(name)))


def debris(*tops):
    """Leftovers of a killed run under TOPS: temporary files of atomic writes, source build work
    dirs."""
    out = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            out += [str(Path(dirpath) / d) for d in dirnames if _is_debris(d, True)]
            out += [str(Path(dirpath) / f) for f in filenames if _is_debris(f, False)]
            dirnames[:] = [d for d in dirnames if not _is_debris(d, True)]
    return sorted(out)


def diff(want, got, path=""):
    """Human-readable differences between two nested dicts/lists (empty when equal)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got), key=str):
            here = f"{path}/{k}"
            if k not in got:
                out.append(f"{here}: missing (want {want[k]!r})")
            elif k not in want:
                out.append(f"{here}: extra {got[k]!r}")
            else:
                out += diff(want[k], got[k], here)
        return out
    return [] if want == got else [f"{path or '/'}: want {want!r}, got {got!r}"]


# -- processes ------------------------------------------------------------------------------------------

def wait_gone(argv, timeout):
    """Waits up to TIMEOUT for every process with ARGV to end; the pids still there."""
    deadline = time.monotonic() + timeout
    left = pids_with_argv(argv)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = pids_with_argv(argv)
    return left


def kill_all(argv):
    for pid in pids_with_argv(argv):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(ready, what, proc, timeout):
    """Waits until READY() is true; fails early if PROC (a Popen) ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"emrboot ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.02)


def wait_for_process(argv, proc, timeout):
    """Waits until a process runs ARGV (see wait_until)."""
    wait_until(lambda: pids_with_argv(argv), f"process {argv}", proc, timeout)
