"""Train a softmax classifier on 8x8 handwritten digits with numpy (deterministic).

Reads the data set from $AICERT_INPUTS/digits, writes the weights into $AICERT_OUTPUT.
Hyper-parameters come from the job's [config] ($AICERT_CONFIG).
"""

import json
import os

import numpy as np


def load(path):
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, :-1] / 16.0, table[:, -1].astype(int)


def main():
    with open(os.environ["AICERT_CONFIG"]) as f:
        config = json.load(f)
    epochs, rate = int(config["epochs"]), float(config["learning_rate"])
    features, labels = load(os.path.join(os.environ["AICERT_INPUTS"], "digits"))
    classes = 10
    onehot = np.eye(classes)[labels]
    weights = np.zeros((features.shape[1], classes))
    bias = np.zeros(classes)
    for epoch in range(1, epochs + 1):
        logits = features @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grad = probs - onehot
        weights -= rate * features.T @ grad / len(labels)
        bias -= rate * grad.mean(axis=0)
        if epoch % 50 == 0 or epoch == epochs:
            loss = -np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()
            accuracy = (probs.argmax(axis=1) == labels).mean()
            print(f"epoch {epoch:4d}  loss {loss:.4f}  train accuracy {accuracy:.4f}", flush=True)
    out = os.environ["AICERT_OUTPUT"]
    np.save(os.path.join(out, "weights.npy"), weights)
    np.save(os.path.join(out, "bias.npy"), bias)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({"kind": "softmax-regression", "features": 64, "classes": classes}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
