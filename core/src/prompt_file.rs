//! Prompt files: UTF-8 text, one prompt per line (empty, whitespace-only lines skipped), or
//! JSONL, one `{"prompt": "..."}` object per line, so a prompt may hold newlines. A file whose
//! first non-empty line starts with `{` is read as JSONL.

/// Splits file contents into prompts; errors name the line (and byte offset of bad UTF-8).
pub fn parse_prompt_file(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("invalid UTF-8 at byte offset {at} (line {line}): save the file as UTF-8")
    })?;
    let lines = text.lines().map(|l| l.trim_end_matches('\r')).enumerate().filter(|(_, l)| !l.trim().is_empty());
    let jsonl = text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.trim_start().starts_with('{'));
    let prompts: Vec<String> = if jsonl {
        lines.map(|(i, l)| jsonl_prompt(i + 1, l)).collect::<Result<_, _>>()?
    } else {
        lines.map(|(_, l)| l.to_string()).collect()
    };
    if prompts.is_empty() {
        return Err("the file has no prompts: write one prompt per line, or one {\"prompt\": \"...\"} object per line (JSONL)".into());
    }
    Ok(prompts)
}

fn jsonl_prompt(line: usize, text: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("line {line} is not valid JSON ({e}); a JSONL prompt file holds one {{\"prompt\": \"...\"}} object per line"))?;
    match v.get("prompt") {
        Some(serde_json::Value::String(p)) if !p.trim().is_empty() => Ok(p.clone()),
        Some(serde_json::Value::String(_)) => Err(format!("line {line}: \"prompt\" is empty")),
        Some(other) => Err(format!("line {line}: \"prompt\" must be a string, found {other}")),
        None => Err(format!("line {line}: the object has no \"prompt\" field; write {{\"prompt\": \"...\"}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_and_jsonl() {
        assert_eq!(parse_prompt_file(b"a\n\n b \r\n").unwrap(), vec!["a", " b "]);
        let jsonl = b"{\"prompt\": \"first\\nwith a newline\"}\n\n{\"prompt\": \"second\", \"id\": 2}\n";
        assert_eq!(parse_prompt_file(jsonl).unwrap(), vec!["first\nwith a newline", "second"]);
    }

    #[test]
    fn bad_jsonl_names_the_line() {
        let err = parse_prompt_file(b"{\"prompt\": \"ok\"}\n{\"text\": \"x\"}\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("no \"prompt\" field"), "{err}");
        let err = parse_prompt_file(b"{\"prompt\": \"ok\"}\n\n{broken\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("not valid JSON"), "{err}");
        let err = parse_prompt_file(b"{\"prompt\": 5}\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("must be a string"), "{err}");
    }
}
