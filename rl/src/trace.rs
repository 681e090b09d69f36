//! Token traces (issue 17, `run.trace_every`): one Parquet file per traced step with one row per response
//! token, flat columns (schema in ARCHITECTURE.md, "Token traces"), readable by pandas, polars and DuckDB
//! as they are. Written whole into memory, then to `traces/step_{step:06}.parquet` atomically (temporary
//! name, fsync, rename), so a step traced again after a resume replaces the file in one move. With
//! data-parallel ranks each rank writes the rows of its own micro-batches to `..._rank{r}.parquet`.
use crate::error::{Error, Result};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most rows one trace file may hold when read back (checked against the footer before anything is kept).
pub const MAX_TRACE_ROWS: i64 = 1 << 30;

/// One column's values.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Utf8(Vec<String>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::I32(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::F32(v) => v.len(),
            Column::F64(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Utf8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The Parquet physical type and logical annotation (after the name) in schema-message syntax.
    fn parquet_type(&self) -> (&'static str, &'static str) {
        match self {
            Column::I32(_) => ("int32", ""),
            Column::I64(_) => ("int64", ""),
            Column::F32(_) => ("float", ""),
            Column::F64(_) => ("double", ""),
            Column::Bool(_) => ("boolean", ""),
            Column::Utf8(_) => ("binary", " (UTF8)"),
        }
    }
    /// Numeric values as f64 (`None` for strings).
    pub fn as_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Column::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Column::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Column::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Column::F64(v) => v.clone(),
            Column::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            Column::Utf8(_) => return None,
        })
    }
}

/// A table: named columns of equal length, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
    /// A numeric column as f64, or an error naming it.
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        let missing = || Error::Data { file: None, line: None, msg: format!("no numeric column {name:?}") };
        self.get(name).and_then(Column::as_f64).ok_or_else(missing)
    }
}

/// Per response token of one traced step, in row order (see ARCHITECTURE.md for each column's meaning).
#[derive(Clone, Debug, Default)]
pub struct TokenTrace {
    pub step: Vec<i64>,
    pub sample: Vec<i32>,
    pub prompt: Vec<i64>,
    pub data_source: Vec<String>,
    pub position: Vec<i32>,
    pub rel_position: Vec<f32>,
    pub response_len: Vec<i32>,
    /// Per probe layer: the layer and its `Hnorm` per token.
    pub hnorm: Vec<(usize, Vec<f32>)>,
    pub pred_entropy: Vec<f32>,
    pub old_logp: Vec<f32>,
    pub new_logp: Vec<f32>,
    pub ratio: Vec<f32>,
    pub advantage: Vec<f32>,
    pub reward: Vec<f64>,
    pub selected: Vec<bool>,
    pub token_weight: Vec<f32>,
    pub grad_norm: Vec<f32>,
    pub grad_norm_applied: Vec<f32>,
}

impl TokenTrace {
    /// An empty trace with one `Hnorm` column per probe layer.
    pub fn new(layers: &[usize]) -> Self {
        Self { hnorm: layers.iter().map(|&l| (l, Vec::new())).collect(), ..Default::default() }
    }

    /// The file's columns, in the documented order.
    pub fn table(self) -> Table {
        let mut c: Vec<(String, Column)> = vec![
            ("step".into(), Column::I64(self.step)),
            ("sample".into(), Column::I32(self.sample)),
            ("prompt".into(), Column::I64(self.prompt)),
            ("data_source".into(), Column::Utf8(self.data_source)),
            ("position".into(), Column::I32(self.position)),
            ("rel_position".into(), Column::F32(self.rel_position)),
            ("response_len".into(), Column::I32(self.response_len)),
        ];
        c.extend(self.hnorm.into_iter().map(|(l, v)| (format!("hnorm_l{l}"), Column::F32(v))));
        c.extend([
            ("pred_entropy".into(), Column::F32(self.pred_entropy)),
            ("old_logp".into(), Column::F32(self.old_logp)),
            ("new_logp".into(), Column::F32(self.new_logp)),
            ("ratio".into(), Column::F32(self.ratio)),
            ("advantage".into(), Column::F32(self.advantage)),
            ("reward".into(), Column::F64(self.reward)),
            ("selected".into(), Column::Bool(self.selected)),
            ("token_weight".into(), Column::F32(self.token_weight)),
            ("grad_norm".into(), Column::F32(self.grad_norm)),
            ("grad_norm_applied".into(), Column::F32(self.grad_norm_applied)),
        ]);
        Table { columns: c }
    }
}

/// `traces/` of a run folder.
pub fn trace_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("traces")
}

/// The trace file of `step` (1-based, as in metrics.jsonl) written by `rank` of `world` ranks.
pub fn trace_path(run_dir: &Path, step: u64, rank: usize, world: usize) -> PathBuf {
    let name = if world > 1 { format!("step_{step:06}_rank{rank}.parquet") } else { format!("step_{step:06}.parquet") };
    trace_dir(run_dir).join(name)
}

/// Encode `t` as one Parquet file (one row group, snappy) in memory.
pub fn encode(t: &Table) -> Result<Vec<u8>> {
    let n = t.rows();
    if let Some((name, c)) = t.columns.iter().find(|(_, c)| c.len() != n) {
        return Err(Error::invalid(format!("trace column {name} has {} values, not {n}", c.len())));
    }
    // Encoding into memory fails only on a schema this function got wrong.
    let enc = |e: parquet::errors::ParquetError| Error::Internal(format!("encoding a trace: {e}"));
    let field = |(name, c): &(String, Column)| {
        let (ty, note) = c.parquet_type();
        format!("  required {ty} {name}{note};\n")
    };
    let fields: String = t.columns.iter().map(field).collect();
    let schema = Arc::new(parse_message_type(&format!("message trace {{\n{fields}}}")).map_err(enc)?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let mut w = SerializedFileWriter::new(Vec::new(), schema, props).map_err(enc)?;
    let mut rg = w.next_row_group().map_err(enc)?;
    for (_, c) in &t.columns {
        let mut col =
            rg.next_column().map_err(enc)?.ok_or_else(|| Error::Internal("trace schema has fewer columns".into()))?;
        let r = match c {
            Column::I32(v) => col.typed::<Int32Type>().write_batch(v, None, None),
            Column::I64(v) => col.typed::<Int64Type>().write_batch(v, None, None),
            Column::F32(v) => col.typed::<FloatType>().write_batch(v, None, None),
            Column::F64(v) => col.typed::<DoubleType>().write_batch(v, None, None),
            Column::Bool(v) => col.typed::<BoolType>().write_batch(v, None, None),
            Column::Utf8(v) => {
                let b: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                col.typed::<ByteArrayType>().write_batch(&b, None, None)
            }
        };
        r.map_err(enc)?;
        col.close().map_err(enc)?;
    }
    rg.close().map_err(enc)?;
    w.into_inner().map_err(enc)
}

/// Write `t` to `path` atomically (temporary name, fsync, rename), creating the folder.
pub fn write(path: &Path, t: &Table) -> Result<()> {
    let bytes = encode(t)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    Ok(entrl_qwen3::save::write_atomic(path, &bytes)?)
}

/// Read a trace file (or any flat Parquet file of these column types) back into columns. The row count is
/// read from the footer and checked against [`MAX_TRACE_ROWS`] before rows are read.
pub fn read(path: &Path) -> Result<Table> {
    let at = |m: String| Error::data(path, None, m);
    let file = entrl_qwen3::files::open_regular(path)?;
    let reader = SerializedFileReader::new(file).map_err(|e| at(format!("not a readable parquet file ({e})")))?;
    let rows = reader.metadata().file_metadata().num_rows();
    if !(0..=MAX_TRACE_ROWS).contains(&rows) {
        return Err(at(format!("{rows} rows (at most {MAX_TRACE_ROWS})")));
    }
    let mut table = Table::default();
    for (i, row) in reader.get_row_iter(None).map_err(|e| at(e.to_string()))?.enumerate() {
        let row = row.map_err(|e| at(format!("row {}: {e}", i + 1)))?;
        for (k, (name, field)) in row.get_column_iter().enumerate() {
            if i == 0 {
                let empty = match field {
                    Field::Int(_) => Column::I32(Vec::new()),
                    Field::Long(_) => Column::I64(Vec::new()),
                    Field::Float(_) => Column::F32(Vec::new()),
                    Field::Double(_) => Column::F64(Vec::new()),
                    Field::Bool(_) => Column::Bool(Vec::new()),
                    Field::Str(_) => Column::Utf8(Vec::new()),
                    other => return Err(at(format!("column {name}: unsupported value {other}"))),
                };
                table.columns.push((name.clone(), empty));
            }
            let Some((_, col)) = table.columns.get_mut(k) else {
                return Err(at(format!("row {}: more columns than the first row", i + 1)));
            };
            match (col, field) {
                (Column::I32(v), Field::Int(x)) => v.push(*x),
                (Column::I64(v), Field::Long(x)) => v.push(*x),
                (Column::F32(v), Field::Float(x)) => v.push(*x),
                (Column::F64(v), Field::Double(x)) => v.push(*x),
                (Column::Bool(v), Field::Bool(x)) => v.push(*x),
                (Column::Utf8(v), Field::Str(x)) => v.push(x.clone()),
                (_, other) => return Err(at(format!("row {}, column {name}: unexpected value {other}", i + 1))),
            }
        }
    }
    Ok(table)
}

/// The trace files of a run folder, sorted by name (step, then rank). Empty when there are none.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = trace_dir(run_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e.map_err(Error::io("list", &dir))?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("step_") && name.ends_with(".parquet") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_type_round_trips_through_a_file() {
        let t = Table {
            columns: vec![
                ("a".into(), Column::I32(vec![1, -2, 3])),
                ("b".into(), Column::I64(vec![1 << 40, 0, -1])),
                ("c".into(), Column::F32(vec![0.5, f32::NAN, -1.25])),
                ("d".into(), Column::F64(vec![1e-300, 2.0, 3.5])),
                ("e".into(), Column::Bool(vec![true, false, true])),
                ("f".into(), Column::Utf8(vec!["math".into(), "ünï".into(), String::new()])),
            ],
        };
        let dir = std::env::temp_dir().join(format!("entrl-trace-rt-{}", std::process::id()));
        let path = trace_path(&dir, 1, 0, 1);
        write(&path, &t).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.rows(), 3);
        let names: Vec<&str> = back.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
        for ((_, x), (_, y)) in t.columns.iter().zip(&back.columns) {
            match (x, y) {
                (Column::F32(x), Column::F32(y)) => {
                    assert!(x.iter().zip(y).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())))
                }
                _ => assert_eq!(x, y),
            }
        }
        assert_eq!(list(&dir).unwrap(), vec![path.clone()]);
        // unequal columns are refused; a file that is not parquet is a clear error
        let bad = Table { columns: vec![("a".into(), Column::I32(vec![1])), ("b".into(), Column::I32(vec![]))] };
        assert!(encode(&bad).unwrap_err().to_string().contains("column b has 0 values, not 1"));
        std::fs::write(&path, b"not parquet").unwrap();
        let e = read(&path).unwrap_err();
        assert!(matches!(&e, Error::Data { file: Some(f), .. } if f == &path), "{e:?}");
        assert!(e.to_string().contains("not a readable parquet file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
