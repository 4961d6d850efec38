//! What `kiln validate` and `kiln diff` share: threshold flags, input selection, running a
//! model as written, and rendering a comparison report (table, JSON, JUnit).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use kiln_backends::runtime::{Session, SessionOptions};
use kiln_backends::tensors::{self, IoSpec};
use kiln_backends::validate::thresholds::num;
use kiln_backends::validate::{
    synthetic_inputs, Metrics, Report, Rng, Status, SyntheticSpec, Thresholds, TopkAxis,
};
use kiln_backends::NamedValues;

use super::Outcome;
use crate::error::CliError;
use crate::{model_file, render};

/// A synthetic-input spec from `--dim NAME=SIZE` and `--int-high [INPUT:]N` flags.
pub fn synthetic_spec(dims: &[String], int_high: &[String]) -> Result<SyntheticSpec, CliError> {
    let mut spec = SyntheticSpec::default();
    for h in int_high {
        let bad = || CliError::Usage(format!("--int-high {h}: expected N or INPUT:N"));
        match h.parse::<u64>() {
            Ok(n) => spec.default_int_high = n,
            Err(_) => {
                let (name, n) = h.rsplit_once(':').ok_or_else(bad)?;
                spec.int_high
                    .insert(name.to_string(), n.trim().parse().map_err(|_| bad())?);
            }
        }
    }
    for d in dims {
        let parsed = d
            .rsplit_once('=')
            .and_then(|(name, size)| Some((name.to_string(), size.parse().ok()?)));
        let (name, size) =
            parsed.ok_or_else(|| CliError::Usage(format!("--dim {d}: expected NAME=SIZE")))?;
        spec.dims.insert(name, size);
    }
    Ok(spec)
}

/// Where model inputs come from.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Inputs: an `.npz`, an `.npy`, a folder of `<input>.npy`/`.pb`, a `test_data_set_N`
    /// folder, or a folder of `test_data_set_*` folders (each is one sample).
    #[arg(long, value_name = "DATA", conflicts_with = "synthetic")]
    pub inputs: Option<PathBuf>,
    /// Generate N seeded samples instead: floats in [0,1), integers in [0,10), bools.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,
    /// Seed of the synthetic inputs.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Size of a free (symbolic) input dim for synthetic inputs, `NAME=SIZE` (default 1).
    #[arg(long = "dim", value_name = "NAME=SIZE")]
    pub dims: Vec<String>,
    /// Exclusive upper bound of synthetic integer inputs, `N` or `INPUT:N` (default 10).
    #[arg(long, value_name = "[INPUT:]N")]
    pub int_high: Vec<String>,
}

/// Tolerances, limits and report formats.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Absolute tolerance of the allclose check (default 1e-5); `VALUE` or `OUTPUT:VALUE`.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub atol: Vec<String>,
    /// Relative tolerance of the allclose check (default 1e-5).
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub rtol: Vec<String>,
    /// Largest share of elements allowed outside tolerance (default 0).
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub max_outside_share: Vec<String>,
    /// Largest allowed max abs error.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub max_abs: Vec<String>,
    /// Largest allowed mean abs error.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub max_mean_abs: Vec<String>,
    /// Largest allowed max relative error.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub max_rel: Vec<String>,
    /// Largest allowed RMSE.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub max_rmse: Vec<String>,
    /// Smallest allowed SQNR in dB.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub min_sqnr: Vec<String>,
    /// Smallest allowed cosine similarity.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub min_cosine: Vec<String>,
    /// Smallest allowed top-1 agreement.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub min_top1: Vec<String>,
    /// Smallest allowed top-5 agreement.
    #[arg(long, value_name = "[OUTPUT:]VALUE")]
    pub min_top5: Vec<String>,
    /// Thresholds from a YAML file (`default:` and `outputs:`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Axis for top-1/top-5 agreement: a number (negative from the end), `auto` (last axis of
    /// float outputs of rank ≥ 2), or `off`.
    #[arg(
        long,
        value_name = "AXIS",
        default_value = "auto",
        allow_hyphen_values = true
    )]
    pub topk_axis: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report (one test case per output).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

impl CheckArgs {
    /// The thresholds: the file's, then the flags over them.
    pub fn thresholds(&self) -> Result<Thresholds, CliError> {
        let mut flags = Thresholds::default();
        let lists: [(&str, &Vec<String>); 11] = [
            ("atol", &self.atol),
            ("rtol", &self.rtol),
            ("max_outside_share", &self.max_outside_share),
            ("max_abs", &self.max_abs),
            ("max_mean_abs", &self.max_mean_abs),
            ("max_rel", &self.max_rel),
            ("max_rmse", &self.max_rmse),
            ("min_sqnr", &self.min_sqnr),
            ("min_cosine", &self.min_cosine),
            ("min_top1", &self.min_top1),
            ("min_top5", &self.min_top5),
        ];
        for (limit, values) in lists {
            for v in values {
                flags.apply_flag(limit, v)?;
            }
        }
        let file = match &self.thresholds {
            Some(path) => Thresholds::from_yaml_file(path)?,
            None => Thresholds::default(),
        };
        Ok(file.overridden_by(&flags))
    }

    /// The top-k axis choice.
    pub fn topk(&self) -> Result<TopkAxis, CliError> {
        match self.topk_axis.as_str() {
            "auto" => Ok(TopkAxis::Auto),
            "off" => Ok(TopkAxis::Off),
            s => s.parse().map(TopkAxis::Axis).map_err(|_| {
                CliError::Usage(format!(
                    "--topk-axis {s}: expected an axis number, 'auto' or 'off'"
                ))
            }),
        }
    }

    /// Prints the report (table or JSON), writes the JUnit file, and maps the verdict to an
    /// outcome. `title` names the suite (`kiln validate`), `sides` the two things compared.
    pub fn finish(
        &self,
        report: &Report,
        title: &str,
        sides: (&Path, &Path),
    ) -> Result<Outcome, CliError> {
        if let Some(path) = &self.junit {
            model_file::write_text(path, &report.junit(title))?;
        }
        if self.json {
            let mut json = serde_json::to_value(report).map_err(|e| {
                CliError::Usage(format!("could not render the report as JSON: {e}"))
            })?;
            if let Some(obj) = json.as_object_mut() {
                obj.insert("reference".into(), sides.0.display().to_string().into());
                obj.insert("candidate".into(), sides.1.display().to_string().into());
            }
            println!("{json:#}");
        } else {
            print!("{}", table(report, std::io::stdout().is_terminal()));
        }
        Ok(if report.passed {
            Outcome::Success
        } else {
            Outcome::CheckFailed
        })
    }
}

/// The report as a table: output, verdict, max abs, SQNR, cosine, outside share, why.
pub fn table(report: &Report, colour: bool) -> String {
    let paint = |text: &str, code: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut rows = vec![vec![
        "output".to_string(),
        "verdict".to_string(),
        "max abs".to_string(),
        "SQNR dB".to_string(),
        "cosine".to_string(),
        "outside".to_string(),
        "notes".to_string(),
    ]];
    for o in &report.outputs {
        // Pad before painting: escape codes would throw the column widths off.
        let verdict = if o.passed { "ok  " } else { "FAIL" };
        let verdict = paint(verdict, if o.passed { "32" } else { "31;1" });
        let mut row = vec![o.name.clone(), verdict];
        match &o.metrics {
            Some(Metrics::Float(m)) => {
                row.push(num(m.max_abs));
                row.push(num(m.sqnr_db));
                row.push(num(m.cosine));
                row.push(format!("{}/{}", m.outside, m.elements));
            }
            Some(Metrics::Exact(m)) => {
                row.extend(["-".into(), "-".into(), "-".into()]);
                row.push(format!("{}/{}", m.mismatched, m.elements));
            }
            None => row.extend(["-".into(), "-".into(), "-".into(), "-".into()]),
        }
        let mut notes = Vec::new();
        if let Some(Metrics::Float(m)) = &o.metrics {
            if m.nan_reference + m.nan_candidate + m.inf_reference + m.inf_candidate > 0 {
                notes.push(format!(
                    "NaN {}/{} Inf {}/{} (ref/cand)",
                    m.nan_reference, m.nan_candidate, m.inf_reference, m.inf_candidate
                ));
            }
            if let Some(t1) = m.top1 {
                notes.push(format!("top1 {}", num(t1)));
            }
        }
        if o.status != Status::Compared || !o.passed {
            notes.extend(o.failure_text());
        }
        row.push(notes.join("; "));
        rows.push(row);
    }
    let mut out = render::table(&rows);
    let failed = report.outputs.iter().filter(|o| !o.passed).count();
    let n = report.outputs.len();
    let samples = report.samples;
    if report.passed {
        out.push_str(&format!(
            "{}: {n} output(s) within tolerance over {samples} sample(s)\n",
            paint("PASS", "32;1")
        ));
    } else {
        out.push_str(&format!(
            "{}: {failed} of {n} output(s) failed over {samples} sample(s)\n",
            paint("FAIL", "31;1")
        ));
    }
    out
}

/// A model loaded to run as written: one thread, no ORT graph rewrites.
pub fn open_model(path: &Path) -> Result<Session, CliError> {
    Ok(Session::from_path_with(
        path,
        &SessionOptions::as_written(),
    )?)
}

/// Whether `path` is a model rather than saved outputs.
pub fn is_model(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The input samples for `session`, from files or synthetic, each with where it came from.
pub fn input_samples(
    args: &InputArgs,
    session: &Session,
) -> Result<Vec<(String, NamedValues)>, CliError> {
    match (&args.inputs, args.synthetic) {
        (Some(path), _) => {
            let specs: Vec<IoSpec> = session.inputs().iter().map(|i| i.spec()).collect();
            tensors::list_samples(path)?
                .into_iter()
                .map(|s| Ok((s.display().to_string(), tensors::read_values(&s, &specs)?)))
                .collect()
        }
        (None, Some(n)) => {
            let spec = synthetic_spec(&args.dims, &args.int_high)?;
            let mut rng = Rng::new(args.seed);
            let infos = session.inputs();
            (0..n)
                .map(|i| {
                    let values = synthetic_inputs(&infos, &spec, &mut rng)
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                    Ok((format!("synthetic sample {i} (seed {})", args.seed), values))
                })
                .collect()
        }
        (None, None) => Err(CliError::Usage(
            "no inputs: give --inputs DATA or --synthetic N".into(),
        )),
    }
}

/// Runs `session` on one sample; errors name the sample.
pub fn run_on(
    session: &mut Session,
    model: &Path,
    sample: &(String, NamedValues),
) -> Result<NamedValues, CliError> {
    session.run(&sample.1).map_err(|source| CliError::Inputs {
        path: PathBuf::from(format!("{} on {}", model.display(), sample.0)),
        source,
    })
}

/// Writes one sample's values under `dir/<side>` (a `test_data_set_N` subfolder when there
/// are several samples).
pub fn save(
    dir: &Path,
    side: &str,
    index: usize,
    many: bool,
    values: &NamedValues,
) -> Result<(), CliError> {
    let mut path = dir.join(side);
    if many {
        path = path.join(format!("test_data_set_{index}"));
    }
    std::fs::create_dir_all(&path).map_err(|source| CliError::Io {
        path: path.clone(),
        source,
    })?;
    tensors::write_values(&path, values)?;
    Ok(())
}
