//! Prompt files, the built-in set, synthetic prompts of exact length, and the position check.

use tokbench_core::{Catalog, PromptSource};
use tokbench_worker::prompts::{self, BUILTIN_PROMPTS};
use tokbench_worker::tokenizer::Tokenizer;
use tokbench_worker::EngineError;

#[test]
fn prompt_file_lines_empty_lines_and_crlf() {
    let got = prompts::parse_prompts(b"first prompt\r\n\n   \nsecond  \n\tthird\n").unwrap();
    assert_eq!(got, vec!["first prompt", "second  ", "\tthird"]);
}

#[test]
fn non_utf8_prompt_file_names_line_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.txt");
    std::fs::write(&path, b"ok\nfine\nbad \xff here\n").unwrap();
    let err = prompts::read_prompt_file(&path).unwrap_err();
    assert!(matches!(err, EngineError::PromptFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("byte offset 12") && msg.contains("line 3") && msg.contains("p.txt"), "{msg}");
}

#[test]
fn empty_and_missing_prompt_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.txt");
    std::fs::write(&path, "\n  \n").unwrap();
    assert!(prompts::read_prompt_file(&path).unwrap_err().to_string().contains("no prompts"));
    let missing = dir.path().join("missing.txt");
    let msg = prompts::read_prompt_file(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing.txt") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn builtin_set_starts_with_the_demo_prompts_and_cycles() {
    let p = prompts::builtin(BUILTIN_PROMPTS.len() + 2);
    assert_eq!(&p[..4], ["Hello, my name is", "The president of the United States is", "The capital of France is", "The future of AI is"]);
    assert_eq!(p[BUILTIN_PROMPTS.len()], p[0]);
    assert_eq!(p[BUILTIN_PROMPTS.len() + 1], p[1]);
}

#[test]
fn synthetic_prompts_have_exact_length_and_are_deterministic() {
    for model in ["tiny-gpt2", "tiny-opt"] {
        let cfg = Catalog::get(model).unwrap().config();
        let tok = Tokenizer::fallback(&cfg);
        let a = prompts::synthetic(3, 17, &tok).unwrap();
        let b = prompts::synthetic(3, 17, &tok).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[0].ids, a[1].ids, "prompts differ");
        for p in &a {
            assert_eq!(p.ids.len(), 17, "{model}");
            // The text re-encodes to the same ids (so the report's prompt text is faithful).
            assert_eq!(tok.encode(&p.text).unwrap(), p.ids, "{model}: {:?}", p.text);
        }
        if model == "tiny-opt" {
            assert_eq!(a[0].ids[0], 2);
        }
    }
    let tok = Tokenizer::fallback(&Catalog::get("tiny-opt").unwrap().config());
    assert!(prompts::synthetic(1, 1, &tok).unwrap_err().to_string().contains("input_len"));
}

#[test]
fn prompt_too_long_is_reported_with_numbers() {
    let cfg = Catalog::get("tiny-gpt2").unwrap().config(); // 1024 positions
    let tok = Tokenizer::fallback(&cfg);
    let src = PromptSource::Synthetic { num_prompts: 2, input_len: 1000 };
    let err = prompts::prepare(&src, &tok, &cfg, 100, "tiny-gpt2").unwrap_err();
    match &err {
        EngineError::PromptTooLong { index, tokens, needed, max_positions, .. } => {
            assert_eq!((*index, *tokens, *needed, *max_positions), (0, 1000, 1100, 1024));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("--max-tokens"), "{err}");
    // Exactly at the limit is fine.
    let ok = prompts::prepare(&src, &tok, &cfg, 24, "tiny-gpt2").unwrap();
    assert_eq!(ok.len(), 2);
}

#[test]
fn builtin_prompts_are_tokenised_with_the_real_bpe() {
    let cfg = Catalog::get("tiny-gpt2").unwrap().config();
    let tok = Tokenizer::fallback(&cfg);
    let p = prompts::prepare(&PromptSource::Builtin { num_prompts: 1 }, &tok, &cfg, 8, "tiny-gpt2").unwrap();
    // GPT-2: "Hello" "," " my" " name" " is"
    assert_eq!(p[0].ids, vec![15496, 11, 616, 1438, 318]);
}

/// A rotary-family model without tokenizer files gets no tokenizer of another family: prompts of
/// `--input-len` are token ids from its own vocabulary (deterministic, BOS first for Llama), and
/// text prompts are refused with what to do.
#[test]
fn without_tokenizer_files_prompts_are_token_ids_and_text_is_refused() {
    for (name, bos) in [("tiny-llama", Some(0u32)), ("tiny-qwen3", None)] {
        let cfg = Catalog::get(name).unwrap().config();
        let tok = Tokenizer::fallback(&cfg);
        assert_eq!(tok.description(), "none (synthetic token ids)");
        let a = prompts::prepare(&PromptSource::Synthetic { num_prompts: 3, input_len: 16 }, &tok, &cfg, 8, name).unwrap();
        let b = prompts::prepare(&PromptSource::Synthetic { num_prompts: 3, input_len: 16 }, &tok, &cfg, 8, name).unwrap();
        assert_eq!(a, b, "{name}: deterministic");
        assert_ne!(a[0].ids, a[1].ids, "{name}: prompts differ");
        for p in &a {
            assert_eq!(p.ids.len(), 16);
            assert!(p.ids.iter().all(|&id| (id as usize) < cfg.vocab_size()));
            assert_eq!(p.ids.first().copied().filter(|_| bos.is_some()), bos, "{name}");
        }
        let err = prompts::prepare(&PromptSource::Inline { prompts: vec!["Hello".into()] }, &tok, &cfg, 8, name).unwrap_err().to_string();
        assert!(err.contains("need a tokenizer") && err.contains("tokenizer.json") && err.contains("--input-len"), "{err}");
        // The default (built-in) prompts become token-id prompts rather than failing.
        let builtin = prompts::prepare(&PromptSource::Builtin { num_prompts: 2 }, &tok, &cfg, 8, name).unwrap();
        assert_eq!(builtin.len(), 2);
        assert_eq!(builtin[0].ids.len(), prompts::BUILTIN_IDS_LEN);
    }
}
