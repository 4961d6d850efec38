//! Convolutions and pooling: Conv, ConvTranspose, ConvInteger, QLinearConv, MaxPool,
//! AveragePool, LpPool, the global pools, MaxUnpool, RoiAlign, GridSample.

use crate::ir::Dim;
use crate::tensor::DataType;

use super::ctx::Ctx;
use super::ty::Ty;

/// The spatial geometry attributes of a window operator.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads: Vec<i64>,
    auto_pad: String,
    ceil_mode: bool,
}

impl Window {
    /// Reads the attributes for `k` spatial dims, `kernel` from the attribute or the weight.
    fn read(ctx: &Ctx, k: usize, weight_kernel: Option<Vec<i64>>) -> Option<Window> {
        let list = |name: &str, default: i64, len: usize| -> Option<Vec<i64>> {
            match ctx.attr_ints(name) {
                Some(v) if v.len() == len => Some(v.to_vec()),
                Some(_) => None,
                None => Some(vec![default; len]),
            }
        };
        let kernel = match ctx.attr_ints("kernel_shape") {
            Some(v) => v.to_vec(),
            None => weight_kernel?,
        };
        if kernel.len() != k || kernel.iter().any(|&x| x <= 0) {
            return None;
        }
        let w = Window {
            kernel,
            strides: list("strides", 1, k)?,
            dilations: list("dilations", 1, k)?,
            pads: list("pads", 0, 2 * k)?,
            auto_pad: ctx.attr_str("auto_pad").unwrap_or("NOTSET").to_string(),
            ceil_mode: ctx.attr_int_or("ceil_mode", 0) != 0,
        };
        if w.strides.iter().chain(&w.dilations).any(|&x| x <= 0) {
            return None;
        }
        Some(w)
    }

    /// The output size of spatial dim `i` for input size `d` (in i128: attributes are the
    /// model's and may be absurd).
    fn out_dim(&self, i: usize, d: &Dim) -> Dim {
        let Dim::Known(n) = *d else {
            return Dim::Unknown;
        };
        let w = |v: i64| v as i128;
        let (n, k, s, dl) = (
            w(n),
            w(self.kernel[i]),
            w(self.strides[i]),
            w(self.dilations[i]),
        );
        let (pb, pe) = (w(self.pads[i]), w(self.pads[i + self.kernel.len()]));
        let eff = (k - 1) * dl + 1;
        let out = match self.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => Some((n + s - 1) / s),
            "VALID" => floor_or_ceil(n - eff, s, self.ceil_mode).map(|q| q + 1),
            "NOTSET" | "" => {
                let span = n + pb + pe - eff;
                if self.ceil_mode {
                    // ONNX's formula and ONNX Runtime's (which drops a last window that
                    // starts in the end padding) can differ; only claim a size both give.
                    let onnx = floor_or_ceil(span, s, true).map(|q| q + 1);
                    let ort = onnx.map(|o| if (o - 1) * s >= n + pb { o - 1 } else { o });
                    onnx.filter(|_| onnx == ort)
                } else {
                    floor_or_ceil(span, s, false).map(|q| q + 1)
                }
            }
            _ => None,
        };
        match out.and_then(|o| i64::try_from(o).ok()) {
            Some(o) if o > 0 => Dim::Known(o),
            _ => Dim::Unknown,
        }
    }
}

/// `a / b` rounded down or up, for `a >= 0`; `None` for negative `a`.
fn floor_or_ceil(a: i128, b: i128, ceil: bool) -> Option<i128> {
    if a < 0 {
        return None;
    }
    Some(if ceil { (a + b - 1) / b } else { a / b })
}

/// The fixed kernel dims of a weight `[M, C, k...]`.
fn weight_kernel(w: Option<&[Dim]>) -> Option<Vec<i64>> {
    w?.get(2..)?
        .iter()
        .map(|d| match d {
            Dim::Known(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// `[N, channels, spatial…]` for a window over input `x`.
fn windowed(ctx: &Ctx, x: usize, w: Option<usize>, channels: Dim) -> Option<Vec<Dim>> {
    let xs = ctx.shape(x)?;
    if xs.len() < 3 {
        return None;
    }
    let k = xs.len() - 2;
    let win = Window::read(ctx, k, weight_kernel(w.and_then(|w| ctx.shape(w))))?;
    let mut out = vec![xs[0].clone(), channels];
    out.extend(xs[2..].iter().enumerate().map(|(i, d)| win.out_dim(i, d)));
    Some(out)
}

fn conv_shape(ctx: &Ctx, x: usize, w: usize) -> Option<Vec<Dim>> {
    let m = ctx
        .shape(w)
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Unknown);
    windowed(ctx, x, Some(w), m)
}

/// Conv: the input's type, `[N, M, out…]`.
pub fn conv(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(0), conv_shape(ctx, 0, 1))])
}

/// ConvInteger: int32, like Conv.
pub fn conv_integer(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(
        Some(DataType::Int32),
        conv_shape(ctx, 0, 1),
    )])
}

/// QLinearConv: the output zero point's type, like Conv on inputs 0 and 3.
pub fn qlinear_conv(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(7), conv_shape(ctx, 0, 3))])
}

/// MaxPool, AveragePool, LpPool: the input's channels; MaxPool's indices are int64.
pub fn pool(ctx: &Ctx) -> Option<Vec<Ty>> {
    let c = ctx
        .shape(0)
        .and_then(|s| s.get(1).cloned())
        .unwrap_or(Dim::Unknown);
    let shape = windowed(ctx, 0, None, c);
    Some(vec![
        Ty::tensor(ctx.elem(0), shape.clone()),
        Ty::tensor(Some(DataType::Int64), shape),
    ])
}

/// GlobalAveragePool, GlobalMaxPool, GlobalLpPool: `[N, C, 1, …]`.
pub fn global_pool(ctx: &Ctx) -> Option<Vec<Ty>> {
    let out = ctx.shape(0).and_then(|s| {
        (s.len() >= 2).then(|| {
            let mut o = s[..2].to_vec();
            o.extend(std::iter::repeat_n(Dim::Known(1), s.len() - 2));
            o
        })
    });
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

/// ConvTranspose: `[N, group·W[1], s·(in−1) + output_padding + eff_k − pads]`, or the
/// `output_shape` attribute, or `in·s` for SAME padding.
pub fn conv_transpose(ctx: &Ctx) -> Option<Vec<Ty>> {
    Some(vec![Ty::tensor(ctx.elem(0), conv_transpose_shape(ctx))])
}

fn conv_transpose_shape(ctx: &Ctx) -> Option<Vec<Dim>> {
    let xs = ctx.shape(0)?;
    if xs.len() < 3 {
        return None;
    }
    let k = xs.len() - 2;
    let ws = ctx.shape(1);
    let group = ctx.attr_int_or("group", 1);
    let m = match ws.and_then(|s| s.get(1)) {
        Some(Dim::Known(c)) => Dim::Known(c.checked_mul(group)?),
        _ => Dim::Unknown,
    };
    let mut out = vec![xs[0].clone(), m];
    if let Some(shape) = ctx.attr_ints("output_shape") {
        let spatial = shape.get(shape.len().checked_sub(k)?..)?;
        out.extend(spatial.iter().map(|&d| Dim::Known(d)));
        return Some(out);
    }
    let win = Window::read(ctx, k, weight_kernel(ws))?;
    let out_pad = match ctx.attr_ints("output_padding") {
        Some(v) if v.len() == k => v.to_vec(),
        Some(_) => return None,
        None => vec![0; k],
    };
    for (i, d) in xs[2..].iter().enumerate() {
        let (s, eff) = (win.strides[i], (win.kernel[i] - 1) * win.dilations[i] + 1);
        out.push(match (d, win.auto_pad.as_str()) {
            (Dim::Known(n), "SAME_UPPER" | "SAME_LOWER") => Dim::Known(n * s),
            (Dim::Known(n), "VALID") => Dim::Known(s * (n - 1) + out_pad[i] + eff),
            (Dim::Known(n), "NOTSET" | "") => {
                Dim::Known(s * (n - 1) + out_pad[i] + eff - win.pads[i] - win.pads[i + k])
            }
            _ => Dim::Unknown,
        });
    }
    Some(out)
}

/// RoiAlign: `[num_rois, C, output_height, output_width]`.
pub fn roi_align(ctx: &Ctx) -> Option<Vec<Ty>> {
    let rois = ctx
        .shape(1)
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Unknown);
    let c = ctx
        .shape(0)
        .and_then(|s| s.get(1).cloned())
        .unwrap_or(Dim::Unknown);
    let out = vec![
        rois,
        c,
        Dim::Known(ctx.attr_int_or("output_height", 1)),
        Dim::Known(ctx.attr_int_or("output_width", 1)),
    ];
    Some(vec![Ty::tensor(ctx.elem(0), Some(out))])
}

/// GridSample: `[N, C] + grid.shape[1..-1]`.
pub fn grid_sample(ctx: &Ctx) -> Option<Vec<Ty>> {
    let out = match (ctx.shape(0), ctx.shape(1)) {
        (Some(x), Some(g)) if x.len() >= 2 && g.len() == x.len() => {
            let mut o = x[..2].to_vec();
            o.extend_from_slice(&g[1..g.len() - 1]);
            Some(o)
        }
        _ => None,
    };
    Some(vec![Ty::tensor(ctx.elem(0), out)])
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn conv_with_pads_strides_dilations() {
        let (m, _) = run_one(
            13,
            "Conv",
            &[
                f32_in(&["n", "3", "224", "224"]),
                f32_in(&["64", "3", "7", "7"]),
            ],
            &[("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,64,112,112]");
        let (m, _) = run_one(
            13,
            "Conv",
            &[
                f32_in(&["1", "2", "10", "9"]),
                f32_in(&["4", "2", "3", "3"]),
            ],
            &[("dilations", ints(&[2, 1])), ("strides", ints(&[1, 2]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,4,6,4]");
    }

    #[test]
    fn conv_auto_pad_same_upper_and_valid() {
        let (m, _) = run_one(
            13,
            "Conv",
            &[f32_in(&["1", "3", "7", "8"]), f32_in(&["5", "3", "3", "3"])],
            &[
                ("auto_pad", string("SAME_UPPER")),
                ("strides", ints(&[2, 2])),
            ],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,5,4,4]");
        let (m, _) = run_one(
            13,
            "Conv",
            &[f32_in(&["1", "3", "7", "h"]), f32_in(&["5", "3", "3", "3"])],
            &[("auto_pad", string("VALID")), ("strides", ints(&[2, 2]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,5,3,?]");
    }

    #[test]
    fn pools_and_ceil_mode() {
        let (m, _) = run_one(
            12,
            "MaxPool",
            &[f32_in(&["1", "3", "32", "32"])],
            &[
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("ceil_mode", int(1)),
            ],
            2,
        );
        assert_eq!(out_type(&m, 0), "float32[1,3,16,16]");
        assert_eq!(out_type(&m, 1), "int64[1,3,16,16]");
        let (m, _) = run_one(
            12,
            "AveragePool",
            &[f32_in(&["1", "3", "32", "32"])],
            &[("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2]))],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,3,15,15]");
        let (m, _) = run_one(
            13,
            "GlobalAveragePool",
            &[f32_in(&["n", "3", "h", "w"])],
            &[],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[n,3,1,1]");
    }

    #[test]
    fn conv_transpose_sizes() {
        let (m, _) = run_one(
            13,
            "ConvTranspose",
            &[f32_in(&["1", "4", "5", "5"]), f32_in(&["4", "2", "3", "3"])],
            &[
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("output_padding", ints(&[1, 1])),
                ("group", int(2)),
            ],
            1,
        );
        assert_eq!(out_type(&m, 0), "float32[1,4,10,10]");
    }
}
