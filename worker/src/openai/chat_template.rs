//! Chat turns to prompt text with the checkpoint's own chat template (Jinja, from
//! `tokenizer_config.json`'s `chat_template` or a `chat_template.jinja` file next to it),
//! rendered by minijinja as transformers' `apply_chat_template` renders it: `trim_blocks` and
//! `lstrip_blocks` on, `messages`, `add_generation_prompt`, the special tokens' text, a
//! `raise_exception` function and Python's string methods (`.strip()`, ...), which templates call.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

/// `content` as a string, or OpenAI's list of parts (`[{"type":"text","text":"..."}]`) joined.
fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Array(parts) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(|t| t.as_str()), p.get("text").and_then(|t| t.as_str())) {
                (Some("text"), Some(t)) => Ok(t.to_string()),
                _ => Err(D::Error::custom("only text content parts ({\"type\":\"text\",\"text\":...}) are supported")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        _ => Err(D::Error::custom("content must be a string or a list of text parts")),
    }
}
use serde::Deserialize;

pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The template of the checkpoint in `dir`, None when it has none. Errors: a template that
    /// does not compile, an unreadable tokenizer_config.json.
    pub fn load(dir: &Path) -> Result<Option<ChatTemplate>, String> {
        let config: serde_json::Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join("tokenizer_config.json").display()))?,
            Err(_) => serde_json::Value::Null,
        };
        let token = |k: &str| match config.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: the "default" one.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        let source = match source {
            Some(s) => s,
            None => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                Ok(s) => s,
                Err(_) => return Ok(None),
            },
        };
        Self::from_source(source, token("bos_token"), token("eos_token")).map(Some)
    }

    pub fn from_source(source: String, bos_token: String, eos_token: String) -> Result<ChatTemplate, String> {
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| e.to_string())?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source).map_err(|e| format!("the chat template does not compile: {e}"))?;
        Ok(ChatTemplate { env, bos_token, eos_token })
    }

    /// The prompt text for `messages`, ending with the assistant turn's header.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let tmpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => true,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(|e| format!("the chat template failed on these messages: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_chatml_style_template_with_python_methods() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}<|{{ m.role }}|>\n{{ m.content.strip() }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
        let t = ChatTemplate::from_source(src.into(), "<s>".into(), "</s>".into()).unwrap();
        let msgs = vec![ChatMessage { role: "user".into(), content: "  hi ".into() }];
        assert_eq!(t.render(&msgs).unwrap(), "<s><|user|>\nhi\n<|assistant|>\n");
        let bad = vec![ChatMessage { role: "tool".into(), content: "x".into() }];
        assert!(t.render(&bad).unwrap_err().contains("bad role"));
    }
}
