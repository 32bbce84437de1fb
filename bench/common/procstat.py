"""Process memory figures from /proc (stdlib only: imported by runners in every venv)."""


def status_mb(key: str = "VmHWM") -> float:
    """A /proc/self/status memory line in MiB: VmHWM = peak resident, VmRSS = resident now.
    (Not ru_maxrss: Linux keeps it across fork + exec, so a child would report at least its
    parent's size.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)
