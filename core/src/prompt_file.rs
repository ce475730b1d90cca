//! Prompt files: UTF-8 text, one prompt per line, empty (whitespace-only) lines skipped.

/// Splits file contents into prompts; the error names the line and byte offset of bad UTF-8.
pub fn parse_prompt_file(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("invalid UTF-8 at byte offset {at} (line {line}): save the file as UTF-8")
    })?;
    let prompts: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err("the file has no prompts: write one prompt per line".into());
    }
    Ok(prompts)
}
