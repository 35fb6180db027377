"""Import the recipe of examples/hf_causal_lm_loss.py for the tests (examples/ is not a package)."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "examples" / "hf_causal_lm_loss.py"
_spec = importlib.util.spec_from_file_location("hf_causal_lm_loss", _path)
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
causal_lm_loss = _mod.causal_lm_loss
