//! numpy's `.npy` format: one array, a Python-literal header, then the raw elements.
//!
//! Reads format versions 1.0, 2.0 and 3.0; little- and big-endian numbers (big-endian is
//! byte-swapped on read); Fortran order (transposed to C order on read); `<U<n>` (UTF-32)
//! and `|S<n>` (bytes) arrays as string tensors, trailing NULs stripped as numpy does.
//! Object arrays (`|O`, pickles) and opaque `|V<n>` arrays are refused.
//!
//! Writes version 1.0 (2.0 when the header does not fit), header laid out byte for byte as
//! `np.save` lays it out. String tensors are written as `<U<n>` when every element is UTF-8
//! (numpy gives back `str`), else as `|S<n>`; either way a trailing NUL inside an element is
//! lost, because numpy's fixed-width strings cannot hold one.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use bytes::Bytes;
use kiln_passes::tensor::{element_count, DataType, Tensor, TensorData};

use super::error::{label, Result, TensorFileError};
use super::write_atomic;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the data to 64 bytes (`ARRAY_ALIGN`).
const ALIGN: usize = 64;
/// numpy leaves room for the growth axis to reach 21 digits (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_DIGITS: usize = 21;
/// Headers longer than this are taken as corrupt: a real one is under a few hundred bytes
/// (numpy itself refuses more than 10,000 unless told otherwise).
const MAX_HEADER: usize = 1 << 20;
/// Python literal nesting accepted in a header (it needs 2); stops stack exhaustion on garbage.
const MAX_DEPTH: usize = 16;

/// True when `dtype` has a numpy equivalent, so a tensor of it can be written to `.npy`.
pub fn is_numpy_type(dtype: DataType) -> bool {
    dtype == DataType::String || numeric_descr(dtype).is_some()
}

/// The `descr` numpy writes for a numeric type, `None` for strings and types numpy lacks.
pub fn numeric_descr(dtype: DataType) -> Option<&'static str> {
    use DataType::*;
    Some(match dtype {
        Float => "<f4",
        Float16 => "<f2",
        Double => "<f8",
        Int8 => "|i1",
        Int16 => "<i2",
        Int32 => "<i4",
        Int64 => "<i8",
        Uint8 => "|u1",
        Uint16 => "<u2",
        Uint32 => "<u4",
        Uint64 => "<u8",
        Bool => "|b1",
        Complex64 => "<c8",
        Complex128 => "<c16",
        _ => return None,
    })
}

/// Reads a tensor from an `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let file = File::open(path).map_err(|e| TensorFileError::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| TensorFileError::io(path, e))?
        .len();
    read_npy_from(BufReader::new(file), &label(path), Some(len))
}

/// Reads a tensor in `.npy` format from `reader`; `file` names it in messages, `total_len`
/// (the whole file's size, when known) lets a short file be reported before reading it.
pub fn read_npy_from(mut reader: impl Read, file: &str, total_len: Option<u64>) -> Result<Tensor> {
    let header = read_header(&mut reader, file)?;
    let n = element_count(&header.shape).map_err(|e| TensorFileError::tensor(file, e))?;
    let itemsize = header.descr.itemsize();
    let expected = n.checked_mul(itemsize).ok_or_else(|| {
        TensorFileError::corrupt(file, format!("{} is too large", header.describe(None)))
    })?;
    let short = |got: String| {
        TensorFileError::corrupt(
            file,
            format!(
                "{} but the file holds {got} bytes of data",
                header.describe(Some(expected))
            ),
        )
    };
    let mut data = Vec::new();
    if let Some(total) = total_len {
        let available = total.saturating_sub(header.total_len as u64);
        if available != expected as u64 {
            return Err(short(available.to_string()));
        }
        data.reserve_exact(expected);
    }
    // `take` bounds the read by the declared size: a lying archive entry cannot exhaust memory
    // beyond what the header asks for, and one extra byte tells "too long" apart.
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| TensorFileError::corrupt(file, format!("reading the data failed: {e}")))?;
    if data.len() != expected {
        let got = if data.len() > expected {
            format!("more than {expected}")
        } else {
            data.len().to_string()
        };
        return Err(short(got));
    }
    decode_data(&header, n, data, file)
}

/// Where a numeric, C-order `.npy` file's elements are, for reading them in pieces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NpyLayout {
    /// Element type.
    pub dtype: DataType,
    /// Dims.
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

/// Reads an `.npy` header from `reader`; `None` when the data is not plain little-endian
/// C-order numbers (strings, big-endian, Fortran order), which only a whole read decodes.
pub(crate) fn read_layout(reader: &mut impl Read, file: &str) -> Result<Option<NpyLayout>> {
    let header = read_header(reader, file)?;
    element_count(&header.shape).map_err(|e| TensorFileError::tensor(file, e))?;
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    Ok(match header.descr {
        Descr::Number { dtype, swap: false } if !(header.fortran_order && shape.len() > 1) => {
            Some(NpyLayout {
                dtype,
                shape,
                data_offset: header.total_len as u64,
            })
        }
        _ => None,
    })
}

/// The parsed header.
#[derive(Debug)]
struct Header {
    descr: Descr,
    descr_text: String,
    fortran_order: bool,
    shape: Vec<i64>,
    /// Bytes before the data (magic, version, length field, header text).
    total_len: usize,
}

impl Header {
    /// `header says shape (2, 3) of <f4 (24 bytes)`.
    fn describe(&self, bytes: Option<usize>) -> String {
        let size = bytes.map_or(String::new(), |b| format!(" ({b} bytes)"));
        format!(
            "header says shape {} of {}{size}",
            python_tuple(&self.shape),
            self.descr_text
        )
    }
}

/// What a `descr` string says about the elements.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Descr {
    /// A numeric type; `swap` when its bytes are big-endian.
    Number { dtype: DataType, swap: bool },
    /// `U<chars>`: UTF-32 code units, `swap` when big-endian.
    Unicode { chars: usize, swap: bool },
    /// `S<len>`: raw bytes.
    Bytes { len: usize },
}

impl Descr {
    fn itemsize(self) -> usize {
        match self {
            Descr::Number { dtype, .. } => dtype.bits() / 8,
            Descr::Unicode { chars, .. } => chars.saturating_mul(4),
            Descr::Bytes { len } => len,
        }
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], file: &str, what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TensorFileError::corrupt(file, format!("file ends inside the {what}"))
        } else {
            TensorFileError::corrupt(file, format!("reading the {what} failed: {e}"))
        }
    })
}

fn read_header(r: &mut impl Read, file: &str) -> Result<Header> {
    let mut pre = [0u8; 8];
    read_exact(r, &mut pre, file, ".npy magic string")?;
    if &pre[..6] != MAGIC {
        return Err(TensorFileError::corrupt(
            file,
            "not an .npy file (it does not start with \\x93NUMPY)",
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(TensorFileError::unsupported(
                file,
                format!(".npy format version {major}.{minor} (Kiln reads 1.0, 2.0 and 3.0)"),
            ))
        }
    };
    let mut len_buf = [0u8; 4];
    read_exact(r, &mut len_buf[..len_bytes], file, "header length")?;
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > MAX_HEADER {
        return Err(TensorFileError::corrupt(
            file,
            format!("header length {header_len} bytes is implausible (limit {MAX_HEADER})"),
        ));
    }
    let mut text = vec![0u8; header_len];
    read_exact(r, &mut text, file, "header")?;
    // Versions 1 and 2 are latin-1, where every byte is the code point of the same value.
    let text: String = if utf8 {
        String::from_utf8(text)
            .map_err(|_| TensorFileError::corrupt(file, "version 3.0 header is not UTF-8"))?
    } else {
        text.iter().map(|&b| b as char).collect()
    };
    let dict = parse_header_dict(&text).map_err(|e| {
        TensorFileError::corrupt(
            file,
            format!("cannot parse the header {:?}: {e}", text.trim()),
        )
    })?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in dict {
        match (k.as_str(), v) {
            ("descr", Py::Str(s)) => descr = Some(s),
            ("descr", Py::List(_)) => {
                return Err(TensorFileError::unsupported(
                    file,
                    "structured arrays (a list descr) have no ONNX equivalent",
                ))
            }
            ("fortran_order", Py::Bool(b)) => fortran = Some(b),
            ("shape", Py::Tuple(items)) => {
                let dims: Option<Vec<i64>> = items
                    .into_iter()
                    .map(|i| match i {
                        Py::Int(d) => Some(d),
                        _ => None,
                    })
                    .collect();
                shape = Some(dims.ok_or_else(|| {
                    TensorFileError::corrupt(file, "header shape holds a non-integer")
                })?);
            }
            (key @ ("descr" | "fortran_order" | "shape"), v) => {
                return Err(TensorFileError::corrupt(
                    file,
                    format!("header key '{key}' has an unexpected value {v:?}"),
                ))
            }
            (key, _) => {
                return Err(TensorFileError::corrupt(
                    file,
                    format!("header has an unexpected key '{key}'"),
                ))
            }
        }
    }
    let (Some(descr_text), Some(fortran_order), Some(shape)) = (descr, fortran, shape) else {
        return Err(TensorFileError::corrupt(
            file,
            "header lacks one of 'descr', 'fortran_order', 'shape'",
        ));
    };
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(TensorFileError::corrupt(
            file,
            format!(
                "header shape {} has a negative dimension {d}",
                python_tuple(&shape)
            ),
        ));
    }
    let descr = parse_descr(&descr_text, file)?;
    Ok(Header {
        descr,
        descr_text,
        fortran_order,
        shape,
        total_len: 8 + len_bytes + header_len,
    })
}

fn parse_descr(text: &str, file: &str) -> Result<Descr> {
    let (order, code) = match text.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &text[1..]),
        _ => ('=', text),
    };
    let big = match order {
        '>' => true,
        '=' => cfg!(target_endian = "big"),
        _ => false,
    };
    let kind = code.chars().next().unwrap_or(' ');
    let size: Option<usize> = code.get(1..).and_then(|s| s.parse().ok());
    use DataType::*;
    let dtype = match (kind, size) {
        ('f', Some(2)) => Float16,
        ('f', Some(4)) => Float,
        ('f', Some(8)) => Double,
        ('i', Some(1)) => Int8,
        ('i', Some(2)) => Int16,
        ('i', Some(4)) => Int32,
        ('i', Some(8)) => Int64,
        ('u', Some(1)) => Uint8,
        ('u', Some(2)) => Uint16,
        ('u', Some(4)) => Uint32,
        ('u', Some(8)) => Uint64,
        ('b', Some(1)) => Bool,
        ('c', Some(8)) => Complex64,
        ('c', Some(16)) => Complex128,
        ('U', Some(chars)) => return Ok(Descr::Unicode { chars, swap: big }),
        ('S' | 'a', Some(len)) => return Ok(Descr::Bytes { len }),
        ('O', _) => {
            return Err(TensorFileError::unsupported(
                file,
                format!(
                    "descr '{text}' is an object array, stored as a Python pickle, which Kiln \
                     does not load; save a numeric or string dtype instead"
                ),
            ))
        }
        ('V', _) => {
            return Err(TensorFileError::unsupported(
                file,
                format!(
                    "descr '{text}' is an opaque (void) type, as ml_dtypes writes bfloat16, \
                     float8 and int4; it does not say which type it is, so save such tensors \
                     as ONNX TensorProto .pb files"
                ),
            ))
        }
        _ => {
            return Err(TensorFileError::unsupported(
                file,
                format!("descr '{text}' is not a numpy type that ONNX has"),
            ))
        }
    };
    Ok(Descr::Number {
        dtype,
        swap: big && dtype.bits() > 8,
    })
}

fn decode_data(header: &Header, n: usize, mut data: Vec<u8>, file: &str) -> Result<Tensor> {
    let dims = &header.shape;
    // element_count has checked the dims, so they fit usize.
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let fortran = header.fortran_order && shape.len() > 1;
    match header.descr {
        Descr::Number { dtype, swap } => {
            let size = dtype.bits() / 8;
            if swap {
                // Complex numbers are two floats, each swapped on its own.
                let part = if matches!(dtype, DataType::Complex64 | DataType::Complex128) {
                    size / 2
                } else {
                    size
                };
                data.chunks_exact_mut(part).for_each(|c| c.reverse());
            }
            if dtype == DataType::Bool {
                // numpy writes 0/1; any other byte is "true" and ONNX wants exactly 1.
                data.iter_mut().for_each(|b| *b = (*b != 0) as u8);
            }
            if fortran {
                let mut c_order = Vec::with_capacity(data.len());
                for_each_fortran_index(&shape, |i| {
                    c_order.extend_from_slice(&data[i * size..(i + 1) * size])
                });
                data = c_order;
            }
            Tensor::from_raw(dtype, shape, Bytes::from(data))
                .map_err(|e| TensorFileError::tensor(file, e))
        }
        Descr::Unicode { chars, swap } => {
            let mut strings = Vec::with_capacity(n);
            // `U0` has no bytes per element (chunks of 0 are not allowed): n empty strings.
            for (i, item) in data.chunks_exact(chars.max(1) * 4).enumerate() {
                strings.push(decode_utf32(item, swap).ok_or_else(|| {
                    TensorFileError::corrupt(
                        file,
                        format!(
                            "element {i} is not valid UTF-32 (descr {})",
                            header.descr_text
                        ),
                    )
                })?);
            }
            // A zero-width dtype has no bytes per element but still n elements.
            strings.resize(n, Bytes::new());
            string_tensor(shape, strings, fortran, file)
        }
        Descr::Bytes { len } => {
            let data = Bytes::from(data);
            let strings: Vec<Bytes> = (0..n)
                .map(|i| {
                    let item = data.slice(i * len..(i + 1) * len);
                    let end = item.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    item.slice(..end)
                })
                .collect();
            string_tensor(shape, strings, fortran, file)
        }
    }
}

fn string_tensor(
    shape: Vec<usize>,
    strings: Vec<Bytes>,
    fortran: bool,
    file: &str,
) -> Result<Tensor> {
    let strings = if fortran {
        let mut c_order = Vec::with_capacity(strings.len());
        for_each_fortran_index(&shape, |i| c_order.push(strings[i].clone()));
        c_order
    } else {
        strings
    };
    Tensor::from_strings(shape, strings).map_err(|e| TensorFileError::tensor(file, e))
}

/// UTF-32 to UTF-8 with trailing NULs stripped; `None` on an invalid code point.
fn decode_utf32(item: &[u8], swap: bool) -> Option<Bytes> {
    let mut units: Vec<u32> = item
        .chunks_exact(4)
        .map(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            if swap {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        })
        .collect();
    while units.last() == Some(&0) {
        units.pop();
    }
    let s: Option<String> = units.into_iter().map(char::from_u32).collect();
    s.map(|s| Bytes::from(s.into_bytes()))
}

/// Calls `f` with the Fortran-order (column-major) index of each element, in C order.
fn for_each_fortran_index(shape: &[usize], mut f: impl FnMut(usize)) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for i in 1..rank {
        strides[i] = strides[i - 1] * shape[i - 1];
    }
    let mut index = vec![0usize; rank];
    let mut offset = 0usize;
    for _ in 0..n {
        f(offset);
        // Advance the C-order multi-index: the last axis fastest, carrying leftwards.
        for axis in (0..rank).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            offset -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
}

/// A Python value of the small literal subset `.npy` headers use.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    None,
    Int(i64),
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

/// Parses the header text, which must be a dict with string keys.
fn parse_header_dict(text: &str) -> std::result::Result<Vec<(String, Py)>, String> {
    let mut p = PyParser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(format!(
            "unexpected text after the dict at character {}",
            p.pos
        ));
    }
    let Py::Dict(items) = value else {
        return Err("the header is not a dict".into());
    };
    items
        .into_iter()
        .map(|(k, v)| match k {
            Py::Str(k) => Ok((k, v)),
            other => Err(format!("dict key {other:?} is not a string")),
        })
        .collect()
}

struct PyParser {
    chars: Vec<char>,
    pos: usize,
}

impl PyParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{c}' at character {}", self.pos))
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Py, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        self.skip_ws();
        match self.peek() {
            Some('\'' | '"') => self.string(),
            Some('(') => {
                let (items, trailing_comma) = self.items(')', depth)?;
                // `(3)` is just 3 in Python; only `(3,)` is a tuple of one.
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().unwrap_or(Py::None))
                } else {
                    Ok(Py::Tuple(items))
                }
            }
            Some('[') => Ok(Py::List(self.items(']', depth)?.0)),
            Some('{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some('}') {
                        self.pos += 1;
                        return Ok(Py::Dict(entries));
                    }
                    let k = self.value(depth + 1)?;
                    self.expect(':')?;
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some('}') => {}
                        _ => return Err(format!("expected ',' or '}}' at character {}", self.pos)),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "True" => Ok(Py::Bool(true)),
                    "False" => Ok(Py::Bool(false)),
                    "None" => Ok(Py::None),
                    _ => Err(format!("unexpected name '{word}'")),
                }
            }
            Some(c) => Err(format!("unexpected '{c}' at character {}", self.pos)),
            None => Err("the header ends early".into()),
        }
    }

    /// Items up to `close`; also says whether a comma followed the last one.
    fn items(&mut self, close: char, depth: usize) -> std::result::Result<(Vec<Py>, bool), String> {
        self.pos += 1;
        let mut items = Vec::new();
        let mut trailing = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, trailing));
            }
            items.push(self.value(depth + 1)?);
            trailing = false;
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    trailing = true;
                }
                Some(c) if c == close => {}
                _ => {
                    return Err(format!(
                        "expected ',' or '{close}' at character {}",
                        self.pos
                    ))
                }
            }
        }
    }

    fn string(&mut self) -> std::result::Result<Py, String> {
        let quote = self.peek().unwrap_or('\'');
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(Py::Str(s));
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ ('\\' | '\'' | '"')) => s.push(c),
                        _ => return Err("unsupported escape in a string".into()),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> std::result::Result<Py, String> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        // Python 2 wrote longs as `3L`; numpy still reads those headers.
        if matches!(self.peek(), Some('L' | 'l')) {
            self.pos += 1;
        }
        digits
            .parse::<i64>()
            .map(Py::Int)
            .map_err(|_| format!("'{digits}' is not an integer that fits 64 bits"))
    }
}

/// A shape as Python prints a tuple: `()`, `(3,)`, `(2, 3)`.
fn python_tuple<T: std::fmt::Display>(dims: &[T]) -> String {
    match dims {
        [] => "()".into(),
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Writes `tensor` to `path` as `.npy`, atomically (temporary file + rename).
///
/// Types numpy lacks (bfloat16, float8, int4, …) are refused: write them with
/// [`super::write_pb`] instead.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<()> {
    let (header, body) = encode(tensor, &label(path))?;
    write_atomic(path, |w| {
        w.write_all(&header)?;
        w.write_all(&body)
    })
}

/// The `.npy` bytes of `tensor`; `file` names it in messages.
pub fn npy_bytes(tensor: &Tensor, file: &str) -> Result<Vec<u8>> {
    let (mut header, body) = encode(tensor, file)?;
    header.extend_from_slice(&body);
    Ok(header)
}

/// The header and the data of `tensor` in `.npy` format; numeric data is borrowed, not copied.
pub(crate) fn encode<'a>(tensor: &'a Tensor, file: &str) -> Result<(Vec<u8>, Cow<'a, [u8]>)> {
    let (descr, body): (String, Cow<'a, [u8]>) = match tensor.data() {
        TensorData::Raw(raw) => {
            let descr = numeric_descr(tensor.dtype()).ok_or_else(|| {
                TensorFileError::unsupported(
                    file,
                    format!(
                        "numpy has no {} type, so it cannot be saved as .npy; \
                         save it as an ONNX TensorProto .pb file (a folder output does this)",
                        tensor.dtype()
                    ),
                )
            })?;
            (descr.to_string(), Cow::Borrowed(&raw[..]))
        }
        TensorData::Strings(strings) => {
            let (descr, body) = encode_strings(strings);
            (descr, Cow::Owned(body))
        }
    };
    Ok((npy_header(&descr, tensor.shape()), body))
}

/// Fixed-width numpy strings: `<U<chars>` when all are UTF-8, else `|S<bytes>`.
fn encode_strings(strings: &[Bytes]) -> (String, Vec<u8>) {
    let texts: Option<Vec<&str>> = strings
        .iter()
        .map(|s| std::str::from_utf8(s).ok())
        .collect();
    match texts {
        Some(texts) => {
            // numpy never makes a zero-width string dtype from data; it uses at least 1.
            let width = texts
                .iter()
                .map(|t| t.chars().count())
                .max()
                .unwrap_or(0)
                .max(1);
            let mut body = Vec::with_capacity(texts.len() * width * 4);
            for t in texts {
                let mut count = 0;
                for c in t.chars() {
                    body.extend_from_slice(&(c as u32).to_le_bytes());
                    count += 1;
                }
                body.resize(body.len() + (width - count) * 4, 0);
            }
            (format!("<U{width}"), body)
        }
        None => {
            let width = strings.iter().map(Bytes::len).max().unwrap_or(0).max(1);
            let mut body = Vec::with_capacity(strings.len() * width);
            for s in strings {
                body.extend_from_slice(s);
                body.resize(body.len() + width - s.len(), 0);
            }
            (format!("|S{width}"), body)
        }
    }
}

/// The header `np.save` writes: version 1.0 unless the text needs a 4-byte length.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut text = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        python_tuple(shape)
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        text.extend(std::iter::repeat_n(
            ' ',
            GROWTH_DIGITS.saturating_sub(digits),
        ));
    }
    // numpy pads so magic + length + text + '\n' is a multiple of 64, adding a whole 64 when
    // it already is one (its formula), and so do we to stay byte-identical.
    let hlen = text.len() + 1;
    let pad_for = |len_bytes: usize| ALIGN - (MAGIC.len() + 2 + len_bytes + hlen) % ALIGN;
    let (version, len_bytes) = if hlen + pad_for(2) <= u16::MAX as usize {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let padlen = pad_for(len_bytes);
    let mut out = Vec::with_capacity(8 + len_bytes + hlen + padlen);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    let total = (hlen + padlen) as u32;
    out.extend_from_slice(&total.to_le_bytes()[..len_bytes]);
    out.extend_from_slice(text.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_passes::tensor::ALL_DATA_TYPES;

    fn read(bytes: &[u8]) -> Result<Tensor> {
        read_npy_from(bytes, "x.npy", Some(bytes.len() as u64))
    }

    /// Some tensor of `dtype` with a recognisable byte pattern.
    fn sample(dtype: DataType, shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        if dtype == DataType::String {
            let s = (0..n).map(|i| Bytes::from(format!("s{i}é"))).collect();
            return Tensor::from_strings(shape, s).unwrap();
        }
        let len = dtype.byte_len(n).unwrap();
        let mut raw: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        if dtype == DataType::Bool {
            raw.iter_mut().for_each(|b| *b &= 1);
        }
        Tensor::from_raw(dtype, shape, Bytes::from(raw)).unwrap()
    }

    #[test]
    fn numpy_fixtures_read_and_write_back_byte_identical() {
        let cases: [(&[u8], DataType, &[usize]); 16] = [
            (
                include_bytes!("testdata/f2.npy"),
                DataType::Float16,
                &[1, 3],
            ),
            (include_bytes!("testdata/f4.npy"), DataType::Float, &[2, 3]),
            (include_bytes!("testdata/f8.npy"), DataType::Double, &[3]),
            (include_bytes!("testdata/i1.npy"), DataType::Int8, &[3]),
            (include_bytes!("testdata/i2.npy"), DataType::Int16, &[3]),
            (include_bytes!("testdata/i4.npy"), DataType::Int32, &[3]),
            (include_bytes!("testdata/i8.npy"), DataType::Int64, &[3]),
            (include_bytes!("testdata/u1.npy"), DataType::Uint8, &[3]),
            (include_bytes!("testdata/u2.npy"), DataType::Uint16, &[3]),
            (include_bytes!("testdata/u4.npy"), DataType::Uint32, &[3]),
            (include_bytes!("testdata/u8.npy"), DataType::Uint64, &[3]),
            (include_bytes!("testdata/b1.npy"), DataType::Bool, &[2, 2]),
            (include_bytes!("testdata/c8.npy"), DataType::Complex64, &[2]),
            (
                include_bytes!("testdata/c16.npy"),
                DataType::Complex128,
                &[2],
            ),
            (include_bytes!("testdata/scalar.npy"), DataType::Double, &[]),
            (
                include_bytes!("testdata/empty.npy"),
                DataType::Float,
                &[0, 3],
            ),
        ];
        for (bytes, dtype, shape) in cases {
            let t = read(bytes).unwrap();
            assert_eq!((t.dtype(), t.shape()), (dtype, shape));
            assert_eq!(npy_bytes(&t, "x.npy").unwrap(), bytes, "{dtype}");
        }
        let f4 = read(include_bytes!("testdata/f4.npy")).unwrap();
        assert_eq!(
            f4.to_vec::<f32>().unwrap(),
            [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
        );
        let u8s = read(include_bytes!("testdata/u8.npy")).unwrap();
        assert_eq!(u8s.to_vec::<u64>().unwrap(), [0, 1, u64::MAX]);
        let c = read(include_bytes!("testdata/c8.npy")).unwrap();
        assert_eq!(c.to_f64_vec().unwrap(), [1.0, 2.0, 0.0, -3.5]);
        let b = read(include_bytes!("testdata/b1.npy")).unwrap();
        assert_eq!(b.to_vec::<bool>().unwrap(), [true, false, false, true]);
        let s = read(include_bytes!("testdata/scalar.npy")).unwrap();
        assert_eq!(s.to_vec::<f64>().unwrap(), [3.5]);
    }

    fn strings(t: &Tensor) -> Vec<&str> {
        t.strings()
            .unwrap()
            .iter()
            .map(|s| std::str::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn numpy_strings_fortran_big_endian_and_versions() {
        let u = read(include_bytes!("testdata/unicode.npy")).unwrap();
        assert_eq!(u.shape(), [2, 2]);
        assert_eq!(strings(&u), ["a", "héllo", "日本", ""]);
        // Our writer picks the same <U5 numpy did.
        assert_eq!(
            npy_bytes(&u, "x").unwrap(),
            include_bytes!("testdata/unicode.npy")
        );

        let b = read(include_bytes!("testdata/bytes.npy")).unwrap();
        let b: Vec<&[u8]> = b.strings().unwrap().iter().map(|s| &s[..]).collect();
        assert_eq!(b, [&b"ab"[..], b"\x00x", b""]);

        let f = read(include_bytes!("testdata/fortran.npy")).unwrap();
        assert_eq!(f.shape(), [2, 3, 4]);
        assert_eq!(f.to_vec::<i32>().unwrap(), (0..24).collect::<Vec<i32>>());
        let fs = read(include_bytes!("testdata/fortran_str.npy")).unwrap();
        assert_eq!(strings(&fs), ["a", "bb", "c", "d", "e", "ff"]);

        let be = read(include_bytes!("testdata/big_endian_i4.npy")).unwrap();
        assert_eq!(be.to_vec::<i32>().unwrap(), [1, -2, 3, 70000]);
        let bc = read(include_bytes!("testdata/big_endian_c8.npy")).unwrap();
        assert_eq!(bc.to_f64_vec().unwrap(), [1.0, 2.0, 0.0, -3.5]);
        let bs = read(include_bytes!("testdata/big_endian_u2str.npy")).unwrap();
        assert_eq!(strings(&bs), ["hé", "x"]);

        for bytes in [
            &include_bytes!("testdata/v2.npy")[..],
            include_bytes!("testdata/v3.npy"),
        ] {
            assert_eq!(read(bytes).unwrap().to_vec::<i64>().unwrap(), [1, 2, 3]);
        }
    }

    #[test]
    fn pickles_and_void_types_are_refused_by_name() {
        let e = read(include_bytes!("testdata/object.npy")).unwrap_err();
        assert!(matches!(e, TensorFileError::Unsupported { .. }));
        assert!(
            e.to_string()
                .starts_with("x.npy: descr '|O' is an object array"),
            "{e}"
        );
        let e = read(include_bytes!("testdata/void.npy")).unwrap_err();
        assert!(
            e.to_string().starts_with("x.npy: descr '|V2' is an opaque"),
            "{e}"
        );
        assert!(e.to_string().contains(".pb"), "{e}");
    }

    #[test]
    fn every_numpy_type_round_trips_and_others_are_refused() {
        for dtype in ALL_DATA_TYPES {
            for shape in [vec![], vec![3], vec![2, 0, 4], vec![2, 3]] {
                let t = sample(dtype, shape);
                let encoded = npy_bytes(&t, "x.npy");
                if is_numpy_type(dtype) {
                    let bytes = encoded.unwrap();
                    assert_eq!(read(&bytes).unwrap(), t, "{dtype}");
                    // Header padded like numpy's: data starts on a 64-byte boundary.
                    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
                    assert_eq!((10 + header_len) % 64, 0);
                } else {
                    let e = encoded.unwrap_err().to_string();
                    assert!(
                        e.starts_with(&format!("x.npy: numpy has no {dtype} type")),
                        "{e}"
                    );
                    assert!(e.contains(".pb"), "{e}");
                }
            }
        }
    }

    #[test]
    fn huge_rank_uses_version_2() {
        let t = Tensor::from_raw(DataType::Uint8, vec![1; 30_000], Bytes::from(vec![7u8])).unwrap();
        let bytes = npy_bytes(&t, "x").unwrap();
        assert_eq!(&bytes[6..8], [2, 0]);
        let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!((12 + header_len) % 64, 0);
        assert_eq!(read(&bytes).unwrap(), t);
    }

    #[test]
    fn short_or_long_data_is_reported_with_sizes() {
        let mut bytes = include_bytes!("testdata/f4.npy").to_vec();
        bytes.truncate(bytes.len() - 4);
        assert_eq!(
            read(&bytes).unwrap_err().to_string(),
            "x.npy: header says shape (2, 3) of <f4 (24 bytes) but the file holds 20 bytes of data"
        );
        // Without the total length (an archive entry) the same is found by reading.
        let e = read_npy_from(&bytes[..], "x.npy", None).unwrap_err();
        assert!(e.to_string().ends_with("holds 20 bytes of data"), "{e}");
        bytes.extend_from_slice(&[0; 8]);
        let e = read_npy_from(&bytes[..], "x.npy", None).unwrap_err();
        assert!(
            e.to_string().ends_with("holds more than 24 bytes of data"),
            "{e}"
        );
    }

    /// A 1.0 file with `header` as its dict text.
    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let good = include_bytes!("testdata/fortran.npy");
        for len in 0..good.len() {
            let e = read(&good[..len]).unwrap_err();
            assert!(e.to_string().starts_with("x.npy: "), "{e}");
        }
        let bad_headers = [
            "",
            "{",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'a')}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} trailing",
            "[1, 2]",
            &"(".repeat(10_000),
            "{'descr': '\u{1F600}', 'fortran_order': False, 'shape': ()}",
        ];
        for h in bad_headers {
            let e = read(&with_header(h, &[0; 8])).unwrap_err();
            assert!(e.to_string().starts_with("x.npy: "), "{h}: {e}");
        }
        // Dims whose product overflows are refused before any allocation.
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }";
        let e = read(&with_header(h, &[])).unwrap_err();
        assert!(matches!(e, TensorFileError::Tensor { .. }), "{e}");
        // Python 2 longs and `(3)` meaning 3 are read as numpy reads them.
        let h = "{'descr': '<i2', 'fortran_order': False, 'shape': (2L, 1L), }";
        assert_eq!(
            read(&with_header(h, &[1, 0, 2, 0])).unwrap().shape(),
            [2, 1]
        );
        let e = read(&with_header(
            "{'descr': '<i2', 'fortran_order': False, 'shape': (2), }",
            &[],
        ));
        assert!(e.unwrap_err().to_string().contains("unexpected value"));
        // Zero-width strings hold empty elements.
        let h = "{'descr': '<U0', 'fortran_order': False, 'shape': (2,), }";
        assert_eq!(
            read(&with_header(h, &[])).unwrap().strings().unwrap().len(),
            2
        );
        let h = "{'descr': '|S0', 'fortran_order': False, 'shape': (2,), }";
        assert_eq!(
            read(&with_header(h, &[])).unwrap().strings().unwrap().len(),
            2
        );
        // Invalid code points in UTF-32.
        let h = "{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }";
        let e = read(&with_header(h, &[0, 0xd8, 0, 0])).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-32"), "{e}");
        // Non-0/1 bools become 1; `=` means native order.
        let h = "{'descr': '=b1', 'fortran_order': False, 'shape': (2,), }";
        assert_eq!(
            read(&with_header(h, &[0, 5])).unwrap().raw().unwrap()[..],
            [0, 1]
        );
    }

    #[test]
    fn non_utf8_strings_are_written_as_bytes() {
        let t =
            Tensor::from_strings(vec![2], vec![Bytes::from_static(b"\xff"), Bytes::new()]).unwrap();
        let bytes = npy_bytes(&t, "x").unwrap();
        assert!(bytes.windows(5).any(|w| w == b"'|S1'"));
        assert_eq!(read(&bytes).unwrap(), t);
    }

    #[test]
    fn write_npy_is_atomic_and_names_the_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let t = sample(DataType::Float, vec![2, 3]);
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
        let bf16 = sample(DataType::Bfloat16, vec![2]);
        let e = write_npy(&dir.path().join("b.npy"), &bf16).unwrap_err();
        assert!(
            e.to_string().contains("b.npy: numpy has no bfloat16"),
            "{e}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.npy"]);
        let e = read_npy(&dir.path().join("missing.npy")).unwrap_err();
        assert!(e.to_string().contains("missing.npy: "), "{e}");
    }
}
