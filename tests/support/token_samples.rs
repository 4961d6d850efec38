//! Seeded token-id calibration / held-out sets for the language models under `models/`,
//! written at test time as stacked `.npy` files (one per input), so no Python is needed.
//!
//! Token ids are uniform below the vocabulary size found from the embedding table, position
//! ids run 0..L, the mask is all ones, and llama_tiny's KV cache is empty (a prefill).

use std::path::Path;

use kiln_backends::quantize::index_bounds;
use kiln_backends::tensors::write_npy;
use kiln_passes::ir::Model;
use kiln_passes::tensor::Tensor;

/// splitmix64: seeded token ids without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// Writes `count` samples of `tokens` tokens for models/`name` (`model` is it, loaded) into
/// `dir`: `input_ids`, `attention_mask`, and what the model needs besides (llama_tiny's
/// `position_ids` and empty `past_key_values.*`, bert's `token_type_ids`).
pub fn write_token_samples(
    name: &str,
    model: &Model,
    dir: &Path,
    count: usize,
    tokens: usize,
    seed: u64,
) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = *index_bounds(model)
        .get("input_ids")
        .unwrap_or_else(|| panic!("{name}: no bound found for input_ids"));
    let mut rng = Rng(seed);
    let ints = |f: &mut dyn FnMut(usize) -> i64| -> Tensor {
        let v: Vec<i64> = (0..count * tokens).map(&mut *f).collect();
        Tensor::from_vec(vec![count, 1, tokens], v).unwrap()
    };
    let mut inputs = vec![
        ("input_ids", ints(&mut |_| rng.below(vocab) as i64)),
        ("attention_mask", ints(&mut |_| 1)),
    ];
    match name {
        "llama_tiny" => {
            inputs.push(("position_ids", ints(&mut |i| (i % tokens) as i64)));
            let empty = Tensor::from_vec(vec![count, 1, 2, 0, 16], Vec::<f32>::new()).unwrap();
            for layer in 0..2 {
                for kv in ["key", "value"] {
                    let file = format!("past_key_values.{layer}.{kv}");
                    write_npy(&dir.join(format!("{file}.npy")), &empty).unwrap();
                }
            }
        }
        "bert_tiny_op17" => inputs.push(("token_type_ids", ints(&mut |_| 0))),
        _ => {}
    }
    for (input, t) in inputs {
        write_npy(&dir.join(format!("{input}.npy")), &t).unwrap();
    }
}
