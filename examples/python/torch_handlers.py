"""zfleet Python handlers running a small PyTorch CNN, unchanged model code on the fleet.

    zfleet-worker --module examples/python/torch_handlers.py            # CPU worker
    zfleet-worker --device gpu:1 --module examples/python/torch_handlers.py
    zfleet submit torch_classify --file examples/sample.pgm --wait

init(device) builds the model once per worker process, as a real model would load its
checkpoint there: the weights come from torch.manual_seed(SEED), so every worker, every
process and every run has the same model. On a GPU worker the model goes to "cuda:0": the
worker's process sees only its own GPU (CUDA_VISIBLE_DEVICES, docs/DEVICES.md), so cuda:0
is that GPU whatever N its label gpu:N has; on a CPU worker (and a --fake-gpu test worker,
where CUDA is unavailable) it stays on the CPU with one thread (one worker per core).

torch_classify
    Input: an 8-bit binary PGM (P5, maxval 255), such as examples/sample.pgm, parsed by the
    same rules as the built-in `sobel` (examples/python/handlers.py's parse_pgm).
    Output: a JSON object, one line, keys in this order:
      {"classes": ["flat", "edges", "texture", "blobs"],
       "probabilities": [4 numbers, 6 decimals, summing to 1 up to rounding],
       "top": the class with the highest probability,
       "size": [width, height],
       "device": "cpu" or "cuda:0" (where the model ran),
       "label": the worker's device label ("cpu:3", "gpu:1")}
    The classes are names for the 4 outputs of an untrained network with fixed weights:
    the point is real PyTorch code (convolutions, pooling, a linear layer, softmax) loaded
    once and run per job, deterministic for a given input on a given device kind.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from handlers import parse_pgm  # noqa: E402  (the PGM rules shared with sobel_np)

SEED = 20261202
CLASSES = ["flat", "edges", "texture", "blobs"]


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.head = torch.nn.Linear(16, len(CLASSES))

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class State:
    def __init__(self, model, where, label):
        self.model, self.where, self.label = model, where, label


def init(device):
    on_gpu = device.kind == "gpu" and torch.cuda.is_available()
    where = torch.device("cuda:0" if on_gpu else "cpu")
    torch.set_num_threads(1)            # one worker per core; on a GPU the host side is light
    torch.manual_seed(SEED)             # a real model: torch.load(checkpoint) here
    model = SmallCNN().eval().to(where)
    return State(model, where, device.label)


def fini(state):
    state.model = None
    if state.where.type == "cuda":
        torch.cuda.empty_cache()


def torch_classify(state, job):
    data = job.data
    if isinstance(data, memoryview) and data.format != "B":
        data = data.cast("B")
    width, height, offset = parse_pgm(data)
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height, offset=offset)
    # one copy, the conversion to float (a tensor straight on the read-only payload would
    # be writable through torch, which warns about it)
    with torch.inference_mode():
        x = torch.from_numpy(pixels.reshape(1, 1, height, width).astype(np.float32))
        x = x.to(state.where).div_(255.0)
        if job.cancelled:
            raise RuntimeError("torch_classify: cancelled")
        p = torch.softmax(state.model(x), dim=1)[0].cpu().tolist()
    job.progress(1.0, "classified")
    top = max(range(len(CLASSES)), key=lambda i: p[i])
    return json.dumps({
        "classes": CLASSES,
        "probabilities": [round(v, 6) for v in p],
        "top": CLASSES[top],
        "size": [width, height],
        "device": str(state.where),
        "label": state.label,
    })


FUNCTIONS = {"torch_classify": torch_classify}
