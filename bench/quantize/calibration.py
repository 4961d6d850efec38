"""Seeded calibration and held-out inputs for a model, cached as `test_data_set_*` folders.

Every sample is one feed at batch 1, drawn from its own generator seeded by (seed, model name,
split, sample index), so the first N samples of a split are the same whatever the total, the
calibration and held-out splits never share a sample, and a cached sample never needs redrawing.
Samples live once in `pool_<split>/test_data_set_K/input_J.pb` (ONNX TensorProto, named after the
model input); `<split>_<N>/` holds symlinks to the first N of them, the folder both tools read.

What a sample holds, by input:
- 4-D float (an image, NCHW or NHWC by where the 1/3/4 channels are): structured noise, the sum
  of smooth random fields at three scales plus a little white noise, standardised per channel,
  then a random contrast and brightness per channel, so activations vary the way they do
  between real normalised images rather than being identical white noise every time;
- other float: standard normal;
- int named `*mask*`: ones; `*token_type*` / `*segment*`: 0 then 1 from a random split point;
- other int feeding an embedding `Gather` (through Cast/Reshape/...): uniform over the table's
  rows (the vocabulary); otherwise uniform over test_data_set_0's [min, max];
- bool: test_data_set_0's value.
Shapes come from the model: fixed dims as declared, a free first dim (batch) is 1, other free
dims (e.g. sequence) take test_data_set_0's size.

Standalone, to get data for trying `kiln quantize` by hand (prints the folders):

    python3 bench/quantize/calibration.py --models bert_tiny_op17,tiny_cnn --samples 64
"""

import glob
import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# Bump when the sampling changes, so cached pools are redrawn.
GENERATOR_VERSION = 1
SPLITS = {"calib": 0, "heldout": 1}
# Ops an id tensor may pass through on its way to the embedding Gather.
ID_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}


@dataclass
class InputSpec:
    """How to draw one model input."""

    name: str
    dtype: str
    shape: list
    kind: str  # image_nchw | image_nhwc | float | mask | segment | ids | int_range | copy
    low: int = 0
    high: int = 0  # exclusive upper bound for ids / segments / int_range


def _test_inputs(model_dir):
    """test_data_set_0's inputs by name (in model input order when the protos are unnamed)."""
    arrays = []
    for path in sorted(glob.glob(os.path.join(model_dir, "test_data_set_0", "input_*.pb")),
                       key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0])):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        arrays.append((t.name, numpy_helper.to_array(t)))
    return arrays


def _constant_dims(graph):
    """Shapes of initializers and Constant node outputs, by name."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    dims[n.output[0]] = list(a.t.dims)
    return dims


def _embedding_rows(graph, name):
    """Rows of the table an embedding Gather looks `name` up in, following pass-through ops."""
    consts = _constant_dims(graph)
    frontier, seen = [name], set()
    for _ in range(4):
        nxt = []
        for value in frontier:
            for n in graph.node:
                if value not in n.input or (n.op_type, value) in seen:
                    continue
                seen.add((n.op_type, value))
                if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == value:
                    table = consts.get(n.input[0])
                    if table:
                        return table[0]
                elif n.op_type in ID_PASSTHROUGH and n.input[0] == value:
                    nxt.extend(n.output)
        frontier = nxt
    return None


def _image_layout(shape):
    if len(shape) != 4:
        return None
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "image_nchw"
    if shape[3] in (1, 3, 4):
        return "image_nhwc"
    return "image_nchw"


def input_specs(model_dir):
    """The InputSpec of every real (non-initializer) input of model_dir/model.onnx."""
    model = onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=False)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    tests = _test_inputs(model_dir)
    real_inputs = [i for i in graph.input if i.name not in inits]
    by_name = dict(tests)
    specs = []
    for k, inp in enumerate(real_inputs):
        test = by_name.get(inp.name)
        if test is None and k < len(tests):
            test = tests[k][1]
        if test is None:
            raise ValueError(f"{model_dir}: no test_data_set_0 input for {inp.name}")
        tt = inp.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape = []
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif axis == 0:
                shape.append(1)
            else:
                shape.append(int(test.shape[axis]))
        lname = inp.name.lower()
        spec = InputSpec(inp.name, np.dtype(dtype).name, shape, "copy")
        if np.issubdtype(dtype, np.floating):
            spec.kind = _image_layout(shape) or "float"
        elif np.issubdtype(dtype, np.integer):
            rows = _embedding_rows(graph, inp.name)
            if "mask" in lname:
                spec.kind = "mask"
            elif "token_type" in lname or "segment" in lname:
                spec.kind, spec.high = "segment", min(rows or 2, 2)
            elif rows:
                spec.kind, spec.high = "ids", rows
            else:
                spec.kind = "int_range"
                spec.low, spec.high = int(test.min()), int(test.max()) + 1
        elif dtype != np.bool_:
            raise ValueError(f"{model_dir}: input {inp.name} of type {dtype} is not supported")
        specs.append(spec)
    return specs, by_name


def _resize(grid, h, w):
    """Bilinear resize of the last two axes of grid to h x w."""
    gh, gw = grid.shape[-2:]
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    wy, wx = (ys - y0)[:, None], xs - x0
    rows = grid[..., y0, :] * (1 - wy) + grid[..., y1, :] * wy
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def _structured_image(rng, c, h, w):
    """c x h x w: smooth fields at three scales plus white noise, per-channel standardised,
    then a random contrast and brightness per channel."""
    img = np.zeros((c, h, w))
    for cell, weight in ((16, 1.0), (8, 0.6), (4, 0.35)):
        grid = rng.standard_normal((c, -(-h // cell) + 1, -(-w // cell) + 1))
        img += weight * _resize(grid, h, w)
    img += 0.2 * rng.standard_normal((c, h, w))
    img -= img.mean(axis=(1, 2), keepdims=True)
    img /= img.std(axis=(1, 2), keepdims=True) + 1e-6
    contrast = rng.uniform(0.6, 1.4, size=(c, 1, 1))
    brightness = rng.normal(0.0, 0.3, size=(c, 1, 1))
    return img * contrast + brightness


def draw(spec, rng, test_value):
    """One value for spec."""
    shape = tuple(spec.shape)
    if spec.kind == "image_nchw":
        n, c, h, w = shape
        arr = np.stack([_structured_image(rng, c, h, w) for _ in range(n)])
    elif spec.kind == "image_nhwc":
        n, h, w, c = shape
        arr = np.stack([_structured_image(rng, c, h, w).transpose(1, 2, 0) for _ in range(n)])
    elif spec.kind == "float":
        arr = rng.standard_normal(shape)
    elif spec.kind == "mask":
        arr = np.ones(shape)
    elif spec.kind == "segment":
        arr = np.zeros(shape)
        if spec.high > 1 and shape:
            split = rng.integers(1, shape[-1] + 1)
            arr[..., split:] = 1
    elif spec.kind in ("ids", "int_range"):
        arr = rng.integers(spec.low, spec.high, size=shape)
    else:
        arr = np.broadcast_to(test_value, shape)
    return np.ascontiguousarray(arr.astype(spec.dtype))


def _rng(seed, model_name, split, k):
    return np.random.default_rng([seed, zlib.crc32(model_name.encode()), SPLITS[split], k])


def _write_set(folder, specs, values):
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for j, (spec, arr) in enumerate(zip(specs, values)):
        with open(os.path.join(tmp, f"input_{j}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, spec.name).SerializeToString())
    os.replace(tmp, folder)


def ensure_split(model_dir, cache_root, split, n, seed):
    """The folder of the first n samples of split for the model in model_dir (drawn if needed)."""
    name = os.path.basename(os.path.normpath(model_dir))
    specs, tests = input_specs(model_dir)
    root = os.path.join(cache_root, name)
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed,
            "specs": [asdict(s) for s in specs]}
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f) != meta:
                shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    pool = os.path.join(root, f"pool_{split}")
    os.makedirs(pool, exist_ok=True)
    for k in range(n):
        folder = os.path.join(pool, f"test_data_set_{k}")
        if not os.path.isdir(folder):
            rng = _rng(seed, name, split, k)
            _write_set(folder, specs, [draw(s, rng, tests.get(s.name)) for s in specs])
    view = os.path.join(root, f"{split}_{n}")
    want = {f"test_data_set_{k}" for k in range(n)}
    if not os.path.isdir(view) or set(os.listdir(view)) != want:
        shutil.rmtree(view, ignore_errors=True)
        os.makedirs(view)
        for entry in sorted(want):
            os.symlink(os.path.join("..", f"pool_{split}", entry), os.path.join(view, entry))
    return view, specs


def read_split(folder):
    """The samples of a `test_data_set_*` folder, each a {input name: array} dict, in order."""
    sets = sorted(glob.glob(os.path.join(folder, "test_data_set_*")),
                  key=lambda p: int(p.rsplit("_", 1)[1]))
    for s in sets:
        feed = {}
        for path in sorted(glob.glob(os.path.join(s, "input_*.pb"))):
            t = onnx.TensorProto()
            with open(path, "rb") as f:
                t.ParseFromString(f.read())
            feed[t.name] = numpy_helper.to_array(t)
        yield feed


def main():
    import argparse

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description="seeded calibration / held-out sample folders")
    ap.add_argument("--models", required=True, help="comma-separated folders of models/")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--split", choices=sorted(SPLITS), default="calib")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(root, "bench", "out", "quantize", "data"))
    args = ap.parse_args()
    for model in args.models.split(","):
        folder, _ = ensure_split(os.path.join(root, "models", model), args.out, args.split,
                                 args.samples, args.seed)
        print(folder)


if __name__ == "__main__":
    main()
