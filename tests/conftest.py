"""Test-wide setup: 8 fake CPU devices so multi-device code is exercised on CPU.

The flag must be set before jax is first imported, which is why it lives here.
Set JAX_PLATFORMS yourself to run the suite on an accelerator instead.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same programs (same model, other seeds or data); a
# persistent compilation cache for the session cuts that cost several-fold.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "hgrank_jax_test_xla_cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
