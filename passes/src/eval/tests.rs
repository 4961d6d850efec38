//! Kernel tests against hand-computed values.

use half::{bf16, f16};

use super::{evaluate, evaluate_with, EvalError, EvalOptions};
use crate::ir::{AttrValue, Attribute};
use crate::tensor::{DataType, Element, Tensor};

fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn i64s(v: &[i64]) -> Tensor {
    t(&[v.len()], v.to_vec())
}

fn attrs(a: &[(&str, AttrValue)]) -> Vec<Attribute> {
    a.iter()
        .map(|(n, v)| Attribute::new(n, v.clone()))
        .collect()
}

fn try_run(
    op: &str,
    opset: i64,
    a: &[(&str, AttrValue)],
    inputs: &[Option<&Tensor>],
) -> Result<Option<Vec<Tensor>>, EvalError> {
    evaluate(op, "", opset, &attrs(a), inputs)
}

fn run(op: &str, opset: i64, a: &[(&str, AttrValue)], inputs: &[&Tensor]) -> Tensor {
    let inputs: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
    try_run(op, opset, a, &inputs)
        .unwrap_or_else(|e| panic!("{op}: {e}"))
        .unwrap_or_else(|| panic!("{op}: unsupported"))
        .remove(0)
}

fn int(v: i64) -> AttrValue {
    AttrValue::Int(v)
}

fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

// ---- elementwise ----

#[test]
fn add_broadcasts_like_numpy() {
    let a = t(&[2, 1], vec![1f32, 2.0]);
    let b = t(&[3], vec![10f32, 20.0, 30.0]);
    let r = run("Add", 17, &[], &[&a, &b]);
    assert_eq!(r.shape(), &[2, 3]);
    assert_eq!(
        r.to_vec::<f32>().unwrap(),
        vec![11., 21., 31., 12., 22., 32.]
    );
    let bad = t(&[2], vec![1f32, 2.0]);
    assert!(try_run("Add", 17, &[], &[Some(&b), Some(&bad)]).is_err());
}

#[test]
fn broadcasting_with_zero_sized_dims_gives_empty_results() {
    let a = t::<i64>(&[0, 1], vec![]);
    let b = i64s(&[1, 2, 3]);
    let r = run("Mul", 17, &[], &[&a, &b]);
    assert_eq!(r.shape(), &[0, 3]);
    assert!(r.is_empty());
}

#[test]
fn integer_arithmetic_wraps_and_truncates() {
    let a = t(&[2], vec![i32::MAX, -7]);
    let b = t(&[2], vec![1i32, 2]);
    assert_eq!(
        run("Add", 14, &[], &[&a, &b]).to_vec::<i32>().unwrap(),
        vec![i32::MIN, -5]
    );
    assert_eq!(
        run("Div", 14, &[], &[&a, &b]).to_vec::<i32>().unwrap(),
        vec![i32::MAX, -3]
    );
    let x = t(&[1], vec![100i8]);
    assert_eq!(
        run("Mul", 14, &[], &[&x, &x]).to_vec::<i8>().unwrap(),
        vec![16]
    );
    let zero = t(&[1], vec![0i32]);
    let one = t(&[1], vec![1i32]);
    assert!(try_run("Div", 14, &[], &[Some(&one), Some(&zero)]).is_err());
}

#[test]
fn mod_takes_the_divisor_sign_unless_fmod() {
    let a = i64s(&[-7, 7, -7, 6]);
    let b = i64s(&[2, -2, -2, -3]);
    assert_eq!(
        run("Mod", 13, &[], &[&a, &b]).to_vec::<i64>().unwrap(),
        vec![1, -1, -1, 0]
    );
    assert_eq!(
        run("Mod", 13, &[("fmod", int(1))], &[&a, &b])
            .to_vec::<i64>()
            .unwrap(),
        vec![-1, 1, -1, 0]
    );
    let f = t(&[1], vec![-7.5f32]);
    let g = t(&[1], vec![2f32]);
    assert!(try_run("Mod", 13, &[], &[Some(&f), Some(&g)]).is_err());
    assert_eq!(
        run("Mod", 13, &[("fmod", int(1))], &[&f, &g])
            .to_vec::<f32>()
            .unwrap(),
        vec![-1.5]
    );
}

#[test]
fn float16_arithmetic_rounds_to_nearest_even() {
    let a = t(&[2], vec![f16::from_f32(1.0), f16::from_f32(2048.0)]);
    let b = t(&[2], vec![f16::from_f32(0.0004), f16::from_f32(1.0)]);
    let r = run("Add", 14, &[], &[&a, &b]).to_vec::<f16>().unwrap();
    // 2048 + 1 is a tie between 2048 and 2050: even mantissa wins.
    assert_eq!(r, vec![f16::from_f32(1.0), f16::from_f32(2048.0)]);
}

#[test]
fn pow_keeps_the_base_type() {
    let a = t(&[3], vec![2f32, 3.0, 4.0]);
    let e = t(&[1], vec![2i64]);
    assert_eq!(
        run("Pow", 15, &[], &[&a, &e]).to_vec::<f32>().unwrap(),
        vec![4., 9., 16.]
    );
    let b = i64s(&[2, 3]);
    let h = t(&[1], vec![0.5f32]);
    assert_eq!(
        run("Pow", 15, &[], &[&b, &h]).to_vec::<i64>().unwrap(),
        vec![1, 1]
    );
}

#[test]
fn comparisons_and_logic_give_bool() {
    let a = i64s(&[1, 2, 3]);
    let b = i64s(&[2]);
    let eq = run("Equal", 13, &[], &[&a, &b]);
    assert_eq!(eq.dtype(), DataType::Bool);
    assert_eq!(eq.to_vec::<bool>().unwrap(), vec![false, true, false]);
    let lt = run("Less", 13, &[], &[&a, &b]);
    assert_eq!(lt.to_vec::<bool>().unwrap(), vec![true, false, false]);
    let ge = run("GreaterOrEqual", 13, &[], &[&a, &b]);
    assert_eq!(ge.to_vec::<bool>().unwrap(), vec![false, true, true]);
    let not = run("Not", 13, &[], &[&lt]);
    let and = run("And", 13, &[], &[&not, &ge]);
    assert_eq!(and.to_vec::<bool>().unwrap(), vec![false, true, true]);
    let xor = run("Xor", 13, &[], &[&eq, &ge]);
    assert_eq!(xor.to_vec::<bool>().unwrap(), vec![false, false, true]);
}

#[test]
fn where_broadcasts_three_ways() {
    let c = t(&[2, 1], vec![true, false]);
    let x = i64s(&[1, 2]);
    let y = t(&[1], vec![9i64]);
    let r = run("Where", 16, &[], &[&c, &x, &y]);
    assert_eq!(r.shape(), &[2, 2]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![1, 2, 9, 9]);
}

#[test]
fn variadic_max_propagates_nan_and_mean_divides() {
    let a = t(&[2], vec![1f32, f32::NAN]);
    let b = t(&[2], vec![3f32, 0.0]);
    let c = t(&[1], vec![2f32]);
    let r = run("Max", 13, &[], &[&a, &b, &c]).to_vec::<f32>().unwrap();
    assert_eq!(r[0], 3.0);
    assert!(r[1].is_nan());
    let m = run("Mean", 13, &[], &[&b, &c]).to_vec::<f32>().unwrap();
    assert_eq!(m, vec![2.5, 1.0]);
    let s = run("Sum", 13, &[], &[&i64s(&[1, 2]), &i64s(&[3])]);
    assert_eq!(s.to_vec::<i64>().unwrap(), vec![4, 5]);
}

#[test]
fn unary_math() {
    let x = t(&[4], vec![0.5f32, 1.5, 2.5, -0.5]);
    assert_eq!(
        run("Round", 11, &[], &[&x]).to_vec::<f32>().unwrap(),
        vec![0.0, 2.0, 2.0, -0.0]
    );
    assert_eq!(
        run("Neg", 13, &[], &[&t(&[1], vec![i8::MIN])])
            .to_vec::<i8>()
            .unwrap(),
        vec![i8::MIN]
    );
    assert_eq!(
        run("Abs", 13, &[], &[&i64s(&[-3, 4])])
            .to_vec::<i64>()
            .unwrap(),
        vec![3, 4]
    );
    assert_eq!(
        run("Sign", 13, &[], &[&i64s(&[-3, 0, 4])])
            .to_vec::<i64>()
            .unwrap(),
        vec![-1, 0, 1]
    );
    let s = run("Sqrt", 13, &[], &[&t(&[2], vec![4f64, 2.0])]);
    assert_eq!(s.to_vec::<f64>().unwrap(), vec![2.0, 2f64.sqrt()]);
    let e = run("Erf", 13, &[], &[&t(&[1], vec![1f32])]);
    assert!((e.to_vec::<f32>().unwrap()[0] - 0.842_700_8).abs() < 1e-6);
    let r = run("Relu", 14, &[], &[&t(&[2], vec![-1i32, 5])]);
    assert_eq!(r.to_vec::<i32>().unwrap(), vec![0, 5]);
    // Sqrt of an integer is not an ONNX signature: unsupported, not an error.
    assert_eq!(try_run("Sqrt", 13, &[], &[Some(&i64s(&[4]))]), Ok(None));
}

#[test]
fn clip_takes_attributes_before_opset_11_and_inputs_after() {
    let x = t(&[3], vec![-2f32, 0.5, 9.0]);
    let r = run(
        "Clip",
        6,
        &[
            ("min", AttrValue::Float(0.0)),
            ("max", AttrValue::Float(1.0)),
        ],
        &[&x],
    );
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![0.0, 0.5, 1.0]);
    let lo = Tensor::scalar(-1f32);
    let r = try_run("Clip", 13, &[], &[Some(&x), Some(&lo), None])
        .unwrap()
        .unwrap();
    assert_eq!(r[0].to_vec::<f32>().unwrap(), vec![-1.0, 0.5, 9.0]);
}

// ---- cast ----

#[test]
fn cast_to_float16_rounds_half_to_even_through_float() {
    let x = t(
        &[3],
        vec![1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65520.0],
    );
    let r = run("Cast", 13, &[("to", int(10))], &[&x]);
    let v: Vec<u16> = r
        .to_vec::<f16>()
        .unwrap()
        .iter()
        .map(|h| h.to_bits())
        .collect();
    assert_eq!(v, vec![0x3C00, 0x3C02, 0x7C00]);
    // double → float16 rounds twice, through float, as ONNX Runtime does (measured).
    let d = t(&[1], vec![1.0 + 2f64.powi(-11) + 2f64.powi(-40)]);
    let r = run("Cast", 13, &[("to", int(10))], &[&d]);
    assert_eq!(r.to_vec::<f16>().unwrap()[0].to_bits(), 0x3C00);
    let b = run(
        "Cast",
        13,
        &[("to", int(16))],
        &[&t(&[1], vec![1.0 + 2f32.powi(-8) + 2f32.powi(-20)])],
    );
    assert_eq!(b.to_vec::<bf16>().unwrap()[0].to_bits(), 16257);
}

#[test]
fn cast_between_integers_wraps_and_floats_truncate() {
    let r = run("Cast", 13, &[("to", int(3))], &[&i64s(&[300, -129])]);
    assert_eq!(r.to_vec::<i8>().unwrap(), vec![44, 127]);
    let f = t(&[3], vec![-1.7f32, 2.9, 255.6]);
    let r = run("Cast", 13, &[("to", int(6))], &[&f]);
    assert_eq!(r.to_vec::<i32>().unwrap(), vec![-1, 2, 255]);
    let r = run(
        "Cast",
        13,
        &[("to", int(9))],
        &[&t(&[3], vec![0f32, -0.0, f32::NAN])],
    );
    assert_eq!(r.to_vec::<bool>().unwrap(), vec![false, false, true]);
    let r = run(
        "Cast",
        13,
        &[("to", int(1))],
        &[&t(&[2], vec![true, false])],
    );
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
    // Out of range float → int is undefined (CPU-dependent): refused.
    let big = t(&[1], vec![3e9f32]);
    assert!(try_run("Cast", 13, &[("to", int(6))], &[Some(&big)]).is_err());
    let nan = t(&[1], vec![f32::NAN]);
    assert!(try_run("Cast", 13, &[("to", int(7))], &[Some(&nan)]).is_err());
    // Strings are not supported.
    assert_eq!(
        try_run("Cast", 13, &[("to", int(8))], &[Some(&f)]),
        Ok(None)
    );
}

#[test]
fn cast_like_takes_the_second_input_type() {
    let r = run(
        "CastLike",
        15,
        &[],
        &[&i64s(&[1, 2]), &Tensor::scalar(0f64)],
    );
    assert_eq!(r.to_vec::<f64>().unwrap(), vec![1.0, 2.0]);
}

// ---- shape operators ----

#[test]
fn shape_with_start_and_end_and_size() {
    let x = t::<f32>(&[2, 3, 4, 5], vec![0.0; 120]);
    let r = run("Shape", 15, &[("start", int(1)), ("end", int(-1))], &[&x]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![3, 4]);
    let r = run("Shape", 15, &[("start", int(-10))], &[&x]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![2, 3, 4, 5]);
    let r = run("Size", 13, &[], &[&x]);
    assert_eq!(r.shape(), &[] as &[usize]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![120]);
}

#[test]
fn gather_negative_indices_and_axes() {
    let x = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
    let r = run("Gather", 13, &[], &[&x, &Tensor::scalar(-1i64)]);
    assert_eq!(r.shape(), &[3]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![4, 5, 6]);
    let idx = t(&[2, 1], vec![2i32, -3]);
    let r = run("Gather", 13, &[("axis", int(-1))], &[&x, &idx]);
    assert_eq!(r.shape(), &[2, 2, 1]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![3, 1, 6, 4]);
    assert!(try_run("Gather", 13, &[], &[Some(&x), Some(&Tensor::scalar(2i64))]).is_err());
}

#[test]
fn unsqueeze_and_squeeze_by_opset() {
    let x = t(&[3], vec![1f32, 2.0, 3.0]);
    let r = run("Unsqueeze", 11, &[("axes", ints(&[0, -1]))], &[&x]);
    assert_eq!(r.shape(), &[1, 3, 1]);
    let r = run("Unsqueeze", 13, &[], &[&x, &i64s(&[1])]);
    assert_eq!(r.shape(), &[3, 1]);
    let s = run("Squeeze", 13, &[], &[&r]);
    assert_eq!(s.shape(), &[3]);
    let y = t::<f32>(&[1, 3, 1], vec![0.0; 3]);
    let s = run("Squeeze", 11, &[("axes", ints(&[-1]))], &[&y]);
    assert_eq!(s.shape(), &[1, 3]);
    assert!(try_run("Squeeze", 13, &[], &[Some(&y), Some(&i64s(&[1]))]).is_err());
}

#[test]
fn concat_with_negative_axis_and_empty_parts() {
    let a = t(&[1, 2], vec![1i64, 2]);
    let b = t::<i64>(&[1, 0], vec![]);
    let c = t(&[1, 1], vec![3i64]);
    let r = run("Concat", 13, &[("axis", int(-1))], &[&a, &b, &c]);
    assert_eq!(r.shape(), &[1, 3]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![1, 2, 3]);
    let r = run("Concat", 13, &[("axis", int(0))], &[&a, &a]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![1, 2, 1, 2]);
}

#[test]
fn slice_clamps_and_steps_backwards() {
    let x = i64s(&[0, 1, 2, 3, 4, 5]);
    let s = |starts: &[i64], ends: &[i64], steps: &[i64]| {
        run(
            "Slice",
            13,
            &[],
            &[&x, &i64s(starts), &i64s(ends), &i64s(&[0]), &i64s(steps)],
        )
        .to_vec::<i64>()
        .unwrap()
    };
    assert_eq!(s(&[1], &[i64::MAX], &[2]), vec![1, 3, 5]);
    assert_eq!(s(&[-1], &[i64::MIN], &[-1]), vec![5, 4, 3, 2, 1, 0]);
    assert_eq!(s(&[4], &[1], &[-2]), vec![4, 2]);
    assert_eq!(s(&[10], &[-10], &[-3]), vec![5, 2]);
    assert_eq!(s(&[3], &[1], &[1]), Vec::<i64>::new());
    let m = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
    let r = run(
        "Slice",
        9,
        &[
            ("starts", ints(&[1])),
            ("ends", ints(&[3])),
            ("axes", ints(&[1])),
        ],
        &[&m],
    );
    assert_eq!(r.shape(), &[2, 2]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![2, 3, 5, 6]);
}

#[test]
fn reshape_copies_zero_and_infers_minus_one() {
    let x = t::<f32>(&[2, 3, 4], vec![0.0; 24]);
    let r = run("Reshape", 14, &[], &[&x, &i64s(&[0, -1])]);
    assert_eq!(r.shape(), &[2, 12]);
    let e = t::<f32>(&[0, 3], vec![]);
    let r = run(
        "Reshape",
        14,
        &[("allowzero", int(1))],
        &[&e, &i64s(&[3, 0])],
    );
    assert_eq!(r.shape(), &[3, 0]);
    assert!(try_run("Reshape", 14, &[], &[Some(&x), Some(&i64s(&[5, -1]))]).is_err());
    let r = run("Flatten", 13, &[("axis", int(-1))], &[&x]);
    assert_eq!(r.shape(), &[6, 4]);
    let r = run("Flatten", 13, &[("axis", int(0))], &[&x]);
    assert_eq!(r.shape(), &[1, 24]);
}

#[test]
fn expand_tile_transpose() {
    let x = t(&[2, 1], vec![1i32, 2]);
    let r = run("Expand", 13, &[], &[&x, &i64s(&[2, 1, 3])]);
    assert_eq!(r.shape(), &[2, 2, 3]);
    assert_eq!(
        r.to_vec::<i32>().unwrap(),
        vec![1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]
    );
    let r = run("Tile", 13, &[], &[&x, &i64s(&[2, 2])]);
    assert_eq!(r.shape(), &[4, 2]);
    assert_eq!(r.to_vec::<i32>().unwrap(), vec![1, 1, 2, 2, 1, 1, 2, 2]);
    let m = t(&[2, 3], vec![1u8, 2, 3, 4, 5, 6]);
    let r = run("Transpose", 13, &[], &[&m]);
    assert_eq!(r.shape(), &[3, 2]);
    assert_eq!(r.to_vec::<u8>().unwrap(), vec![1, 4, 2, 5, 3, 6]);
    assert!(try_run("Transpose", 13, &[("perm", ints(&[0, 0]))], &[Some(&m)]).is_err());
}

#[test]
fn split_by_sizes_by_output_count_and_num_outputs() {
    let x = i64s(&[1, 2, 3, 4, 5]);
    let r = try_run("Split", 13, &[], &[Some(&x), Some(&i64s(&[2, 3]))])
        .unwrap()
        .unwrap();
    assert_eq!(r[1].to_vec::<i64>().unwrap(), vec![3, 4, 5]);
    let r = evaluate(
        "Split",
        "",
        18,
        &attrs(&[("num_outputs", int(2))]),
        &[Some(&x)],
    )
    .unwrap()
    .unwrap();
    assert_eq!(r[0].to_vec::<i64>().unwrap(), vec![1, 2, 3]);
    assert_eq!(r[1].to_vec::<i64>().unwrap(), vec![4, 5]);
    let six = i64s(&[1, 2, 3, 4, 5, 6]);
    assert_eq!(evaluate("Split", "", 13, &[], &[Some(&six)]), Ok(None));
    let opts = EvalOptions {
        num_outputs: Some(3),
        ..EvalOptions::default()
    };
    let r = evaluate_with("Split", "", 13, &[], &[Some(&six)], opts)
        .unwrap()
        .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[2].to_vec::<i64>().unwrap(), vec![5, 6]);
}

#[test]
fn split_refuses_negative_or_huge_counts_and_sizes() {
    // Fuzz finding (evaluator): num_outputs = -1 became usize::MAX and overflowed a Vec.
    let x = i64s(&[1, 2, 3]);
    for n in [-1, i64::MIN, 4, i64::MAX] {
        let e = try_run("Split", 18, &[("num_outputs", int(n))], &[Some(&x)]).unwrap_err();
        assert!(e.to_string().contains("num_outputs"), "{e}");
    }
    // Sizes whose sum wraps around to the axis length.
    let sizes = i64s(&[i64::MAX, i64::MAX, 5]);
    assert!(try_run("Split", 13, &[], &[Some(&x), Some(&sizes)]).is_err());
}

#[test]
fn empty_results_with_huge_other_axes_are_refused() {
    // Fuzz finding (evaluator): Tile of an empty tensor to [0, 2^63] passed the element cap
    // (0 elements) and then panicked in ndarray, whose shapes must index within isize.
    let empty = t::<i64>(&[0, 2], vec![]);
    let reps = i64s(&[1, 1 << 62]);
    let e = try_run("Tile", 13, &[], &[Some(&empty), Some(&reps)]).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    // Empty results with modest axes still evaluate.
    let r = run("Tile", 13, &[], &[&empty, &i64s(&[1, 3])]);
    assert_eq!(r.shape(), &[0, 6]);
}

#[test]
fn range_counts_like_onnx_runtime() {
    let r = run(
        "Range",
        11,
        &[],
        &[
            &Tensor::scalar(10i64),
            &Tensor::scalar(1i64),
            &Tensor::scalar(-3i64),
        ],
    );
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![10, 7, 4]);
    let r = run(
        "Range",
        11,
        &[],
        &[
            &Tensor::scalar(0f32),
            &Tensor::scalar(1f32),
            &Tensor::scalar(0.25f32),
        ],
    );
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75]);
    let r = run(
        "Range",
        11,
        &[],
        &[
            &Tensor::scalar(5i32),
            &Tensor::scalar(1i32),
            &Tensor::scalar(1i32),
        ],
    );
    assert!(r.is_empty());
}

#[test]
fn constant_of_shape_respects_the_cap() {
    let value = t(&[1], vec![7i64]);
    let r = run(
        "ConstantOfShape",
        9,
        &[("value", AttrValue::Tensor(value.clone()))],
        &[&i64s(&[2, 2])],
    );
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![7; 4]);
    let r = run("ConstantOfShape", 9, &[], &[&i64s(&[])]);
    assert_eq!(r.dtype(), DataType::Float);
    assert_eq!(r.shape(), &[] as &[usize]);
    let opts = EvalOptions {
        max_elements: 100,
        ..EvalOptions::default()
    };
    let huge = i64s(&[1 << 40, 1 << 40]);
    let err = evaluate_with("ConstantOfShape", "", 9, &[], &[Some(&huge)], opts);
    assert!(matches!(err, Err(EvalError::TooLarge { .. })));
    let r = evaluate_with(
        "Expand",
        "",
        13,
        &[],
        &[Some(&value), Some(&i64s(&[1000]))],
        opts,
    );
    assert!(matches!(r, Err(EvalError::TooLarge { .. })));
}

// ---- linalg ----

#[test]
fn matmul_2d_batched_and_vector() {
    let a = t(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]);
    let b = t(&[2, 1], vec![1f32, 1.0]);
    let r = run("MatMul", 13, &[], &[&a, &b]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![3.0, 7.0]);
    let batch = t(&[3, 1, 2], vec![1f32, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let r = run("MatMul", 13, &[], &[&batch, &a]);
    assert_eq!(r.shape(), &[3, 1, 2]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![1., 2., 3., 4., 4., 6.]);
    let v = t(&[2], vec![1i64, 1]);
    let m = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
    let r = run("MatMul", 13, &[], &[&v, &m]);
    assert_eq!(r.shape(), &[3]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![5, 7, 9]);
}

#[test]
fn gemm_with_transpose_and_bias() {
    let a = t(&[1, 2], vec![1f32, 2.0]);
    let b = t(&[3, 2], vec![1f32, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let c = t(&[3], vec![10f32, 20.0, 30.0]);
    let r = run(
        "Gemm",
        13,
        &[
            ("transB", int(1)),
            ("alpha", AttrValue::Float(2.0)),
            ("beta", AttrValue::Float(0.5)),
        ],
        &[&a, &b, &c],
    );
    assert_eq!(r.shape(), &[1, 3]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![7.0, 14.0, 21.0]);
}

// ---- reductions ----

#[test]
fn reductions_by_opset_with_keepdims() {
    let x = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
    let r = run(
        "ReduceSum",
        13,
        &[("keepdims", int(0))],
        &[&x, &i64s(&[-1])],
    );
    assert_eq!(r.shape(), &[2]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![6, 15]);
    let r = run("ReduceSum", 13, &[], &[&x]);
    assert_eq!(r.shape(), &[1, 1]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![21]);
    let r = run(
        "ReduceSum",
        13,
        &[("noop_with_empty_axes", int(1))],
        &[&x, &i64s(&[])],
    );
    assert_eq!(r, x);
    let f = t(&[2, 2], vec![1f32, 2.0, 3.0, 5.0]);
    let r = run("ReduceMean", 13, &[("axes", ints(&[0]))], &[&f]);
    assert_eq!(r.shape(), &[1, 2]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![2.0, 3.5]);
    let r = run("ReduceMax", 18, &[("keepdims", int(0))], &[&f, &i64s(&[1])]);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![2.0, 5.0]);
    let r = run(
        "ReduceProd",
        13,
        &[("axes", ints(&[1])), ("keepdims", int(0))],
        &[&x],
    );
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![6, 120]);
    let r = run("ReduceMin", 13, &[("axes", ints(&[0]))], &[&x]);
    assert_eq!(r.to_vec::<i64>().unwrap(), vec![1, 2, 3]);
}

// ---- coverage ----

#[test]
fn unknown_ops_domains_and_types_are_unsupported_not_errors() {
    let x = i64s(&[1]);
    assert_eq!(try_run("Conv", 13, &[], &[Some(&x)]), Ok(None));
    assert_eq!(
        evaluate("Add", "com.microsoft", 1, &[], &[Some(&x), Some(&x)]),
        Ok(None)
    );
    let s = Tensor::from_strings(vec![2], vec!["a".into(), "b".into()]).unwrap();
    assert_eq!(try_run("Add", 13, &[], &[Some(&s), Some(&s)]), Ok(None));
}

#[test]
fn movement_operators_work_on_strings() {
    let s = Tensor::from_strings(vec![3], vec!["a".into(), "b".into(), "c".into()]).unwrap();
    let r = run("Gather", 13, &[], &[&s, &i64s(&[2, 0])]);
    assert_eq!(r.strings().unwrap(), &["c", "a"]);
    let r = run("Identity", 13, &[], &[&s]);
    assert_eq!(r, s);
}
