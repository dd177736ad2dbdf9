"""Seeds of independent random streams, derived from one seed (pure Python: no kernels load)."""

MASK = 0xFFFFFFFFFFFFFFFF


def derive_seed(seed: int, salt: int) -> int:
    """An independent 64-bit seed for stream ``salt`` of ``seed`` (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (salt + 1) * 0xD1B54A32D192ED03) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)
