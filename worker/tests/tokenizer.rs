//! The offline GPT-2 tokenizer against Hugging Face's GPT2TokenizerFast (ids recorded by
//! scripts/make_tokenizer_fixture.py), and the vocab.json+merges.txt / tokenizer.json paths.

use std::collections::HashMap;
use tokbench_core::Catalog;
use tokbench_worker::tokenizer::{Tokenizer, FALLBACK_DESCRIPTION};

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}
#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gpt2_tokenizer_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fallback_matches_hf_gpt2_ids_on_tricky_strings() {
    let tok = Tokenizer::fallback(&Catalog::get("gpt2").unwrap().config());
    assert_eq!(tok.description(), FALLBACK_DESCRIPTION);
    let cases = fixture().cases;
    assert!(cases.len() >= 20);
    for c in &cases {
        assert_eq!(tok.encode(&c.text).unwrap(), c.ids, "ids of {:?}", c.text);
        if !c.text.contains("<|endoftext|>") {
            // Decoding drops special tokens, so only plain texts round-trip exactly.
            assert_eq!(tok.decode(&c.ids).unwrap(), c.text, "round trip of {:?}", c.text);
        }
    }
}

#[test]
fn opt_fallback_prepends_bos_and_keeps_counts() {
    let gpt2 = Tokenizer::fallback(&Catalog::get("gpt2").unwrap().config());
    let opt = Tokenizer::fallback(&Catalog::get("opt-125m").unwrap().config());
    assert!(opt.description().contains("</s>"), "{}", opt.description());
    for c in fixture().cases {
        let ids = opt.encode(&c.text).unwrap();
        assert_eq!(ids[0], 2, "OPT prompts start with </s>");
        assert_eq!(ids.len(), gpt2.encode(&c.text).unwrap().len() + 1);
    }
    // BOS is not part of the decoded text.
    let ids = opt.encode("Hello, my name is").unwrap();
    assert_eq!(opt.decode(&ids).unwrap(), "Hello, my name is");
}

/// A minimal GPT-2-style byte-level BPE: the 256 byte symbols plus merges spelling " the".
fn write_small_vocab(dir: &std::path::Path) -> HashMap<String, u32> {
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut vocab: HashMap<String, u32> = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e")];
    for (a, b) in merges {
        let id = vocab.len() as u32;
        vocab.insert(format!("{a}{b}"), id);
    }
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&vocab).unwrap()).unwrap();
    let text: String = std::iter::once("#version: 0.2\n".to_string()).chain(merges.iter().map(|(a, b)| format!("{a} {b}\n"))).collect();
    std::fs::write(dir.join("merges.txt"), text).unwrap();
    vocab
}

#[test]
fn vocab_and_merges_from_the_model_dir() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = write_small_vocab(dir.path());
    let cfg = Catalog::get("tiny-gpt2").unwrap().config();
    let tok = Tokenizer::load(Some(dir.path()), &cfg).unwrap();
    assert!(tok.description().starts_with("vocab.json+merges.txt at"), "{}", tok.description());
    let ids = tok.encode("a the").unwrap();
    assert_eq!(ids, vec![vocab["a"], vocab["Ġthe"]]);
    assert_eq!(tok.decode(&ids).unwrap(), "a the");
}

#[test]
fn tokenizer_json_is_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = write_small_vocab(dir.path());
    let cfg = Catalog::get("tiny-opt").unwrap().config();
    // Save the BPE as tokenizer.json, then corrupt merges.txt: tokenizer.json must win.
    let built = Tokenizer::from_vocab_merges(&dir.path().join("vocab.json"), &dir.path().join("merges.txt"), &cfg).unwrap();
    drop(built);
    let mut t = tokenizers::Tokenizer::new(
        tokenizers::models::bpe::BPE::from_file(&dir.path().join("vocab.json").to_string_lossy(), &dir.path().join("merges.txt").to_string_lossy())
            .build()
            .unwrap(),
    );
    t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::byte_level::ByteLevel::default().add_prefix_space(false)));
    t.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    t.save(dir.path().join("tokenizer.json"), false).unwrap();
    std::fs::write(dir.path().join("merges.txt"), "garbage").unwrap();
    let tok = Tokenizer::load(Some(dir.path()), &cfg).unwrap();
    assert!(tok.description().starts_with("tokenizer.json at"), "{}", tok.description());
    // The checkpoint's tokenizer adds no BOS (no post-processor): neither does tokbench, even
    // for an OPT config (transformers encodes it so too; a family rule would change the ids).
    assert_eq!(tok.encode(" the").unwrap(), vec![vocab["Ġthe"]]);
    assert_eq!(tok.bos(), None);

    // A post-processor that prepends </s> (OPT's published tokenizer does): it is followed.
    let mut with_template = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    with_template.add_special_tokens(&[tokenizers::AddedToken::from("<s>", true)]);
    let s_id = with_template.token_to_id("<s>").unwrap();
    let template = tokenizers::processors::template::TemplateProcessing::builder()
        .try_single("<s> $A")
        .unwrap()
        .special_tokens(vec![("<s>", s_id)])
        .build()
        .unwrap();
    with_template.with_post_processor(Some(template));
    with_template.save(dir.path().join("tokenizer.json"), false).unwrap();
    let tok = Tokenizer::load(Some(dir.path()), &cfg).unwrap();
    assert_eq!(tok.encode(" the").unwrap(), vec![s_id, vocab["Ġthe"]]);
    assert_eq!(tok.bos(), Some(s_id));

    // tokenizer_config.json's add_bos_token: false overrides the post-processor (transformers
    // rebuilds the template from it).
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"add_bos_token": false}"#).unwrap();
    let tok = Tokenizer::load(Some(dir.path()), &cfg).unwrap();
    assert_eq!(tok.encode(" the").unwrap(), vec![vocab["Ġthe"]]);
}

#[test]
fn broken_tokenizer_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    let cfg = Catalog::get("tiny-gpt2").unwrap().config();
    let err = Tokenizer::load(Some(dir.path()), &cfg).err().expect("must fail").to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn ids_outside_the_vocabulary_are_refused() {
    // A model with a 512-id vocabulary cannot take GPT-2's ids.
    let cfg = tokbench_core::ArchConfig::from_json_str(
        r#"{"model_type":"gpt2","vocab_size":512,"n_positions":64,"n_embd":32,"n_layer":1,"n_head":4}"#,
    )
    .unwrap();
    let tok = Tokenizer::fallback(&cfg);
    let err = tok.encode("Hello world").unwrap_err().to_string();
    assert!(err.contains("outside the model's vocabulary"), "{err}");
}

#[test]
fn opt_style_vocab_specials_are_special() {
    // OPT's vocab.json starts with <s>, <pad>, </s>, <unk>; its config has pad 1, bos = eos = 2.
    let dir = tempfile::tempdir().unwrap();
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut vocab: HashMap<String, u32> = ["<s>", "<pad>", "</s>", "<unk>"].iter().enumerate().map(|(i, s)| (s.to_string(), i as u32)).collect();
    for c in alphabet {
        let id = vocab.len() as u32;
        vocab.insert(c.to_string(), id);
    }
    std::fs::write(dir.path().join("vocab.json"), serde_json::to_string(&vocab).unwrap()).unwrap();
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\n").unwrap();
    let tok = Tokenizer::load(Some(dir.path()), &Catalog::get("tiny-opt").unwrap().config()).unwrap();
    let ids = tok.encode("a</s>b").unwrap();
    assert_eq!(ids, vec![2, vocab["a"], 2, vocab["b"]]);
    assert_eq!(tok.decode(&ids).unwrap(), "ab");
}
