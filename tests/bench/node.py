"""The one node protocol of the bench: every simulated node (dirs on the host, a network
namespace, a chroot) runs the emrboot binary the same way, so a helper written for one
(helpers.status_json, plan_json, the crash kit) takes any of them.

    node.run(*args, check=None, timeout=None, input=None) -> CompletedProcess (text)
    node.start(*args, env=None)                          -> Popen (text stdout/stderr pipes)
    node.finish(p, timeout=120)                          -> (exit code, stdout, stderr)
    node.env, node.state_dir, node.log_file              (host paths)

A subclass says only what differs: how a command enters the node (`enter`), where emrboot is
inside it (`exe`), the working directory, how long a command may take by default, and how a
background process is kept (`spawn`, e.g. so that the netbench stops it).
"""
import subprocess

import bench


class EmrbootNode:
    label = "node"
    default_timeout = 120
    cwd = None

    def enter(self):
        """The argv prefix that runs a command inside the node (none: on the host)."""
        return []

    def exe(self):
        """emrboot's path as the node sees it; the bench's binary, checked to exist."""
        exe = bench.emrboot_bin()
        if not exe.is_file():
            raise AssertionError(f"emrboot binary not found at {exe}: build it (cargo build) or set EMRBOOT_BIN")
        return exe

    def argv(self, *args):
        return [*self.enter(), str(self.exe()), *map(str, args)]

    def run(self, *args, check=None, timeout=None, input=None):
        """emrboot ARGS to completion; check=N fails the test unless the exit code is N."""
        cp = subprocess.run(self.argv(*args), env=self.env, text=True, capture_output=True,
                            timeout=timeout or self.default_timeout, input=input, cwd=self.cwd,
                            stdin=None if input is not None else subprocess.DEVNULL)
        if check is not None and cp.returncode != check:
            raise AssertionError(f"[{self.label}] emrboot {' '.join(map(str, args))}: exit {cp.returncode}, "
                                 f"expected {check}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}")
        return cp

    def spawn(self, argv, env):
        """Starts ARGV in the background; a subclass may keep it, to stop it at teardown."""
        return subprocess.Popen(argv, env=env, text=True, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start(self, *args, env=None):
        """emrboot ARGS in the background (env: the node's, unless given)."""
        return self.spawn(self.argv(*args), self.env if env is None else env)

    @staticmethod
    def finish(p, timeout=120):
        """Waits for a start()ed emrboot: (exit code, stdout, stderr)."""
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
