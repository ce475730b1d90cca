//! Parsing `nsys stats --format csv` output: each report's table is found by its header row
//! (progress lines such as "Generating SQLite file ...", "Processing [...] with [...]..." and
//! "SKIPPED: ... does not contain ..." around it are ignored), in the per-report files as in
//! the console output.

use tokbench_core::report::{KernelStat, MemOpStat, NvtxRangeStat};

use super::classify::classify_kernel;
use super::ProfileError;

/// A table found in nsys output: its header and rows.
struct Table {
    header: Vec<String>,
    rows: Vec<csv::StringRecord>,
}

/// Normalised column name: lower case, no spaces (`Time (%)` and `Time(%)` both -> `time(%)`).
fn norm(col: &str) -> String {
    col.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

/// Finds the first table in `text` whose header contains every column in `required`
/// (normalised, units left off: "totaltime" matches "Total Time (ns)"). Lines before the
/// header (progress messages) are skipped; the table ends at the first blank line or at a
/// line that does not parse as a record of the header's width.
fn find_table(text: &str, report: &'static str, required: &[&str]) -> Result<Option<Table>, ProfileError> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(header) = parse_line(line) else { continue };
        let names: Vec<String> = header.iter().map(norm).collect();
        let has = |req: &str| names.iter().any(|n| n == req || n.starts_with(&format!("{req}(")));
        if !required.iter().all(|r| has(r)) {
            continue;
        }
        let mut rows = Vec::new();
        for (j, row_line) in lines[i + 1..].iter().enumerate() {
            if row_line.trim().is_empty() {
                break;
            }
            match parse_line(row_line) {
                Some(rec) if rec.len() == header.len() => rows.push(rec),
                // The last column of these reports is the free-text name; should a writer
                // leave a name with commas unquoted (C++ template arguments), rejoin it.
                Some(rec) if rec.len() > header.len() && rec.get(0).is_some_and(is_number) => {
                    let keep = header.len() - 1;
                    let mut fixed: csv::StringRecord = rec.iter().take(keep).collect();
                    fixed.push_field(&rec.iter().skip(keep).collect::<Vec<_>>().join(","));
                    rows.push(fixed);
                }
                // A numeric first field means a data row of the wrong width: say so rather
                // than silently dropping the rest of the table.
                Some(rec) if rec.len() > 1 && rec.get(0).is_some_and(is_number) => {
                    return Err(ProfileError::StatsParse {
                        report,
                        detail: format!("line {} has {} fields but the header has {}: {row_line:?}", i + j + 2, rec.len(), header.len()),
                    })
                }
                _ => break,
            }
        }
        return Ok(Some(Table { header: header.iter().map(str::to_string).collect(), rows }));
    }
    Ok(None)
}

fn is_number(field: &str) -> bool {
    field.trim().replace(',', "").parse::<f64>().is_ok()
}

/// One CSV line as a record (nsys quotes fields with commas: C++ kernel signatures).
fn parse_line(line: &str) -> Option<csv::StringRecord> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    let mut rec = csv::StringRecord::new();
    match rdr.read_record(&mut rec) {
        Ok(true) => Some(rec),
        _ => None,
    }
}

impl Table {
    fn col(&self, report: &'static str, name: &str) -> Result<(usize, f64), ProfileError> {
        let idx = self
            .header
            .iter()
            .position(|h| {
                let n = norm(h);
                n == name || n.starts_with(&format!("{name}("))
            })
            .ok_or_else(|| ProfileError::StatsParse { report, detail: format!("no \"{name}\" column in header {:?}", self.header) })?;
        Ok((idx, unit_to_ns(&self.header[idx])))
    }

    fn opt_col(&self, report: &'static str, names: &[&str]) -> Result<(usize, f64), ProfileError> {
        for n in names {
            if let Ok(c) = self.col(report, n) {
                return Ok(c);
            }
        }
        Err(ProfileError::StatsParse { report, detail: format!("none of the columns {names:?} in header {:?}", self.header) })
    }
}

/// Multiplier to nanoseconds from a column header's unit: `(ns)`, `(us)`, `(ms)`, `(s)`
/// (`nsys stats --timeunit` changes it); 1 for unitless columns.
fn unit_to_ns(header: &str) -> f64 {
    let h = header.to_ascii_lowercase();
    if h.ends_with("(us)") || h.ends_with("(μs)") {
        1e3
    } else if h.ends_with("(ms)") {
        1e6
    } else if h.ends_with("(s)") && !h.ends_with("(ns)") {
        1e9
    } else {
        1.0
    }
}

fn num(report: &'static str, rec: &csv::StringRecord, (idx, scale): (usize, f64), what: &str) -> Result<f64, ProfileError> {
    let raw = rec.get(idx).unwrap_or("");
    // Column format prints thousands separators ("1,234,567"); tolerate them here too.
    let cleaned: String = raw.trim().chars().filter(|c| *c != ',').collect();
    if cleaned.is_empty() {
        return Ok(0.0); // nsys leaves StdDev empty for single-instance rows in some versions
    }
    cleaned
        .parse::<f64>()
        .map(|v| v * scale)
        .map_err(|_| ProfileError::StatsParse { report, detail: format!("{what} is not a number: {raw:?} in {:?}", rec.iter().collect::<Vec<_>>()) })
}

fn as_u64(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// Columns common to the three summaries.
struct Common {
    pct: (usize, f64),
    total: (usize, f64),
    count: (usize, f64),
    avg: (usize, f64),
    med: Option<(usize, f64)>,
    min: (usize, f64),
    max: (usize, f64),
    std: Option<(usize, f64)>,
}

impl Common {
    fn new(t: &Table, report: &'static str, count_names: &[&str]) -> Result<Common, ProfileError> {
        let mut pct = t.col(report, "time(%)")?;
        pct.1 = 1.0; // a percentage, not a time
        let mut count = t.opt_col(report, count_names)?;
        count.1 = 1.0;
        Ok(Common {
            pct,
            total: t.col(report, "totaltime")?,
            count,
            avg: t.opt_col(report, &["avg", "average"])?,
            med: t.opt_col(report, &["med", "median"]).ok(),
            min: t.opt_col(report, &["min", "minimum"])?,
            max: t.opt_col(report, &["max", "maximum"])?,
            std: t.opt_col(report, &["stddev"]).ok(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn read(&self, report: &'static str, r: &csv::StringRecord) -> Result<(f64, u64, u64, f64, f64, u64, u64, f64), ProfileError> {
        let avg = num(report, r, self.avg, "Avg")?;
        Ok((
            num(report, r, self.pct, "Time (%)")?,
            as_u64(num(report, r, self.total, "Total Time")?),
            as_u64(num(report, r, self.count, "count")?),
            avg,
            match self.med {
                Some(c) => num(report, r, c, "Med")?,
                None => avg,
            },
            as_u64(num(report, r, self.min, "Min")?),
            as_u64(num(report, r, self.max, "Max")?),
            match self.std {
                Some(c) => num(report, r, c, "StdDev")?,
                None => 0.0,
            },
        ))
    }
}

fn text_col(report: &'static str, r: &csv::StringRecord, idx: usize) -> Result<String, ProfileError> {
    r.get(idx)
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ProfileError::StatsParse { report, detail: format!("row too short: {:?}", r.iter().collect::<Vec<_>>()) })
}

/// Parses `nsys stats --report cuda_gpu_kern_sum --format csv` output (with or without
/// progress lines around it). Columns: "Time (%)","Total Time (ns)","Instances","Avg (ns)",
/// "Med (ns)","Min (ns)","Max (ns)","StdDev (ns)","Name". Sorted by total time, descending.
/// No table at all (nsys: "SKIPPED: ... does not contain CUDA kernel data") gives an empty list.
pub fn parse_kernel_summary(csv: &str) -> Result<Vec<KernelStat>, ProfileError> {
    const R: &str = "cuda_gpu_kern_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "instances", "name"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["instances"])?;
    let name = t.col(R, "name")?.0;
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        let name = text_col(R, r, name)?;
        out.push(KernelStat { category: classify_kernel(&name), name, time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}

/// Parses `nsys stats --report nvtx_sum --format csv` output. Columns: "Time (%)",
/// "Total Time (ns)","Instances","Avg (ns)","Med (ns)","Min (ns)","Max (ns)","StdDev (ns)",
/// "Style","Range". Sorted by total time, descending.
pub fn parse_nvtx_summary(csv: &str) -> Result<Vec<NvtxRangeStat>, ProfileError> {
    const R: &str = "nvtx_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "instances", "range"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["instances"])?;
    let range = t.col(R, "range")?.0;
    let style = t.col(R, "style").ok().map(|c| c.0);
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, instances, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        out.push(NvtxRangeStat {
            range: text_col(R, r, range)?,
            style: match style {
                Some(i) => text_col(R, r, i)?,
                None => String::new(),
            },
            time_percent,
            total_time_ns,
            instances,
            avg_ns,
            med_ns,
            min_ns,
            max_ns,
            stddev_ns,
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}

/// Parses `nsys stats --report cuda_gpu_mem_time_sum --format csv` output. Columns:
/// "Time (%)","Total Time (ns)","Count","Avg (ns)","Med (ns)","Min (ns)","Max (ns)",
/// "StdDev (ns)","Operation". Sorted by total time, descending.
pub fn parse_mem_summary(csv: &str) -> Result<Vec<MemOpStat>, ProfileError> {
    const R: &str = "cuda_gpu_mem_time_sum";
    let Some(t) = find_table(csv, R, &["time(%)", "totaltime", "operation"])? else { return Ok(Vec::new()) };
    let c = Common::new(&t, R, &["count", "operations", "instances"])?;
    let op = t.col(R, "operation")?.0;
    let mut out = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (time_percent, total_time_ns, count, avg_ns, med_ns, min_ns, max_ns, stddev_ns) = c.read(R, r)?;
        out.push(MemOpStat { operation: text_col(R, r, op)?, time_percent, total_time_ns, count, avg_ns, med_ns, min_ns, max_ns, stddev_ns });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.total_time_ns));
    Ok(out)
}
