"""Accuracy of the trained digits network on the held-out test set (pure Python).

Reads the weights from $AICERT_WEIGHTS/mlp.npz (code-mlp/train.py's arrays) and the test
set from $AICERT_INPUTS/digits-test; writes {"accuracy": ..., "samples": ...} to
$AICERT_RESULTS. It reads the .npz itself (a zip of .npy arrays) with the standard
library, so it runs in the image's own root as well as in the demo's environment: the
demo runs it in the image's root, which saves sending the environment a second time.
"""

import ast
import csv
import json
import os
import struct
import zipfile
from array import array

NPY_MAGIC = b"\x93NUMPY"


def read_npy(data):
    """A little-endian float64 C-order .npy array as (rows, columns, flat values)."""
    if not data.startswith(NPY_MAGIC):
        raise ValueError("not a .npy array")
    major = data[6]
    size_format, start = ("<H", 10) if major == 1 else ("<I", 12)
    (header_len,) = struct.unpack(size_format, data[8:start])
    header = ast.literal_eval(data[start : start + header_len].decode("latin-1"))
    if header["descr"] != "<f8" or header["fortran_order"]:
        raise ValueError(f"unsupported array {header}")
    shape = tuple(header["shape"])
    values = array("d")
    values.frombytes(data[start + header_len :])
    rows, columns = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    if len(values) != rows * columns:
        raise ValueError("the array's size does not match its shape")
    return rows, columns, values


def load_layers(path):
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        layers = []
        while f"coef_{len(layers)}.npy" in names:
            i = len(layers)
            coef = read_npy(archive.read(f"coef_{i}.npy"))
            bias = read_npy(archive.read(f"intercept_{i}.npy"))
            layers.append((coef, bias[2]))
    return layers


def forward(layers, x):
    for i, ((rows, columns, coef), bias) in enumerate(layers):
        out = list(bias)
        for r in range(rows):
            value = x[r]
            if value:
                base = r * columns
                for c in range(columns):
                    out[c] += value * coef[base + c]
        x = out if i == len(layers) - 1 else [v if v > 0 else 0.0 for v in out]  # relu
    return x


def main():
    layers = load_layers(os.path.join(os.environ["AICERT_WEIGHTS"], "mlp.npz"))
    with open(os.path.join(os.environ["AICERT_INPUTS"], "digits-test"), newline="") as f:
        rows = list(csv.reader(f))[1:]
    correct = 0
    for row in rows:
        scores = forward(layers, [float(v) / 16.0 for v in row[:-1]])
        correct += scores.index(max(scores)) == int(row[-1])
    accuracy = correct / len(rows)
    print(f"test accuracy {accuracy:.4f} on {len(rows)} samples", flush=True)
    with open(os.environ["AICERT_RESULTS"], "w") as f:
        json.dump({"accuracy": round(accuracy, 4), "samples": len(rows)}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
