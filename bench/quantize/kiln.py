"""The `kiln quantize` side: finding the binary, checking it has the command, the command line."""

import os
import subprocess

# The variants run per model and method; each adds flags to the common command line.
#  pinned: Kiln's default, LayerNormalization/Softmax kept out of integer and run in fp16;
#  nopin:  --no-pin, those ops stay float32 (nothing else changes);
#  q8norm: --no-pin and --op-types listing them, so they are quantized to uint8 like the rest,
#          the op coverage ORT's quantize_static has by default. Run on models that have them.
VARIANTS = ("pinned", "nopin", "q8norm")
PINNABLE_OPS = {"LayerNormalization", "Softmax"}
# The ops the issue requires Kiln to quantize, with LayerNormalization and Softmax.
Q8NORM_OP_TYPES = (
    "Conv,ConvTranspose,MatMul,Gemm,Add,Mul,Concat,MaxPool,AveragePool,GlobalAveragePool,"
    "Resize,Sigmoid,Softmax,LayerNormalization,Gather,Split,Slice,Pad,Transpose,Reshape,"
    "Squeeze,Unsqueeze"
)


class KilnUnavailable(Exception):
    """The kiln binary is missing or has no `quantize` command."""


def default_binary(root):
    return os.path.join(root, "target", "release", "kiln")


def check_quantize(kiln):
    """Raises KilnUnavailable with what to do when kiln cannot run `kiln quantize`."""
    if not os.path.isfile(kiln) or not os.access(kiln, os.X_OK):
        raise KilnUnavailable(
            f"no kiln binary at {kiln}: build it with `cargo build --release -p kiln` or pass "
            f"--kiln PATH (or --skip-kiln to run the ORT side only)")
    p = subprocess.run([kiln, "quantize", "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        said = (p.stderr or p.stdout).strip().splitlines()
        raise KilnUnavailable(
            f"{kiln} has no `quantize` command yet (`kiln quantize --help` exited "
            f"{p.returncode}: {said[0] if said else 'no output'}); build a kiln that has it, "
            f"or pass --skip-kiln to run the ORT side only")


def command(kiln, model, out, data, method, variant, report, q8norm_op_types=Q8NORM_OP_TYPES):
    """The `kiln quantize` command line for one run (the issue's fixed flag names)."""
    cmd = [kiln, "quantize", model, "-o", out, "--calibration", data, "--method", method,
           "--activations", "uint8", "--weights", "int8", "--per-channel", "--report", report]
    if variant == "nopin":
        cmd.append("--no-pin")
    elif variant == "q8norm":
        cmd += ["--no-pin", "--op-types", q8norm_op_types]
    elif variant != "pinned":
        raise ValueError(f"unknown variant {variant}")
    return cmd
