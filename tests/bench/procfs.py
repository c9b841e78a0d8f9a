"""A process's memory and CPU time from /proc, for the benches (run,
scale): one reader of /proc/PID/status and /proc/PID/stat."""

import os


def status_kb(pid, key):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM), 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """utime + stime in seconds. The fields are counted after the command
    name's closing parenthesis: the name itself may hold spaces."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
