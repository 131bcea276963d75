//! Tests of the Chat Completions decoder: the scanner against serde, on fixed corpora, random
//! JSON and whole random streams (proptest).

use proptest::prelude::*;

use super::*;

/// One event through a fresh decoder, with the scanner or with serde only.
fn decode(data: &str, fast: bool) -> (Result<(), ModelError>, Vec<ModelChunk>, Option<FinishReason>, String) {
    let mut d = ChatDecoder::default();
    let mut out = Vec::new();
    let r = d.decode(data, fast, &mut out);
    (r, out, d.finish, d.refusal)
}

type StreamResult = (Vec<Result<(), ModelError>>, Vec<ModelChunk>, Result<(), ModelError>, Vec<ModelChunk>);

/// Events through one decoder (so that it learns their shapes), then the end of the stream.
fn decode_stream(events: &[String], fast: bool) -> StreamResult {
    let mut d = ChatDecoder::default();
    let mut out = Vec::new();
    let results = events.iter().map(|e| d.decode(e, fast, &mut out)).collect();
    let mut tail = Vec::new();
    let end = d.end(&mut tail);
    (results, out, end, tail)
}

/// One event of a stream: `kind` picks its shape, `text` its string.
fn stream_event(kind: u8, text: &str) -> String {
    let q = serde_json::to_string(text).unwrap_or_default();
    let head = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"#;
    let pad = serde_json::to_string(&text.chars().rev().collect::<String>()).unwrap_or_default();
    match kind % 14 {
        0 => format!(r#"{{"choices":[{{"delta":{{"content":{q}}},"finish_reason":null,"index":0}}],"id":"x"}}"#),
        1 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":null}}],"obfuscation":"abc"}}"#),
        2 => format!(r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{q}}}}}]}}}}]}}"#),
        3 => format!(r#"{head}"delta":{{"tool_calls":[{{"index":1,"function":{{"arguments":{q}}}}}]}}}}]}}"#),
        4 => format!(
            r#"{head}"delta":{{"tool_calls":[{{"index":1,"id":{q},"function":{{"name":"f","arguments":""}}}}]}}}}]}}"#
        ),
        5 => format!(r#"{head}"delta":{{}},"finish_reason":{q}}}]}}"#),
        6 => r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#.to_string(),
        7 => {
            format!(r#"{head}"delta":{{"content":{}}},"finish_reason":null}}],"obfuscation":"abc"}}"#, escape_all(text))
        }
        8 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":"stop"}}],"obfuscation":"abc"}}"#),
        // The text unescaped: often malformed.
        9 => format!(r#"{head}"delta":{{"content":"{text}"}},"finish_reason":null}}],"obfuscation":"abc"}}"#),
        10 => format!(r#"{head}"delta":{{"tool_calls":[{{"function":{{"arguments":{q}}}}}]}}}}]}}"#),
        12 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":null}}],"obfuscation":{pad}}}"#),
        13 => format!(
            r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{q}}}}}]}}}}]}},"obfuscation":{pad}}}"#
        ),
        _ => format!(r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{text}"}}}}]}}}}]}}"#),
    }
}

#[test]
fn a_stream_decodes_as_serde_does() {
    let pieces = ["The ", "", "caf\u{e9} 😀 \"q\" \\ \n", "\u{1}", "plain"];
    let mut events = Vec::new();
    for kind in 0..14 {
        for text in pieces {
            events.push(stream_event(kind, text));
        }
    }
    for (i, e) in events.iter().enumerate() {
        let (a, b) = (&events[..=i], decode_stream(&events[..=i], true));
        assert_eq!(b, decode_stream(a, false), "{e}");
    }
    // Lone surrogates and bad escapes in the place of the learned string.
    let bad = [
        r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"}"#,
        r#"{"choices":[{"delta":{"content":"\ud800"},"finish_reason":null,"index":0}],"id":"x"}"#,
        r#"{"choices":[{"delta":{"content":"\x"},"finish_reason":null,"index":0}],"id":"x"}"#,
        r#"{"choices":[{"delta":{"content":null},"finish_reason":null,"index":0}],"id":"x"}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"},"finish_reason":null,"index":0}],"id":"x"}"#,
        r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"} "#,
        r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"}}"#,
        r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x""#,
        r#"{"choices":[{"delta":{"content":"b"},"finish_reason":null,"index":0}],"id":"x"}"#,
    ]
    .map(str::to_string);
    assert_eq!(decode_stream(&bad, true), decode_stream(&bad, false));
}

#[test]
fn reasoning_models_by_name() {
    for m in ["o1", "o3-mini", "openai/o4-mini", "gpt-5", "gpt-5.1", "gpt-5-mini", "gpt-6"] {
        assert!(is_reasoning_model(m), "{m}");
    }
    for m in ["gpt-4o", "o10", "gpt-50", "gpt-5x", "o", "", "gpt-4.1", "gpt-5/o"] {
        assert!(!is_reasoning_model(m), "{m}");
    }
}

#[test]
fn the_next_event_of_a_known_shape_is_not_scanned_again() {
    let mut d = ChatDecoder::default();
    let mut out = Vec::new();
    assert!(d.decode(&stream_event(1, "a"), true, &mut out).is_ok());
    assert_eq!(d.text_shape.matches(&stream_event(1, "b\n\"")).as_deref(), Some("b\n\""));
    assert!(d.text_shape.matches(&stream_event(8, "b")).is_none());
    assert!(d.text_shape.matches(&stream_event(0, "b")).is_none());
    assert!(d.decode(&stream_event(2, "{\"x"), true, &mut out).is_ok());
    assert_eq!(d.args_shape.matches(&stream_event(2, "\": 1}")).as_deref(), Some("\": 1}"));
    assert!(d.args_shape.matches(&stream_event(3, "y")).is_none());
    // OpenAI's padding changes with every event.
    assert!(d.decode(&stream_event(12, "abc"), true, &mut out).is_ok());
    assert_eq!(d.text_shape.matches(&stream_event(12, "de")).as_deref(), Some("de"));
    assert_eq!(d.text_shape.matches(&stream_event(1, "de")).as_deref(), Some("de"));
    assert!(d.text_shape.matches(&stream_event(8, "de")).is_none());
    // A piece that names the call is not a shape to reuse.
    assert!(d.decode(&stream_event(4, "call_1"), true, &mut out).is_ok());
    assert!(d.args_shape.matches(&stream_event(4, "call_2")).is_none());
}

/// Events the scanner must decode itself, to the same result as serde.
const FAST: &[&str] = &[
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}]}"#,
    r#"{"choices":[{"delta":{"content":"line\nbreak \"quoted\" back\\slash \/ \b\f\r\t"}}]}"#,
    r#"{"choices":[{"delta":{"content":"caf\u00e9 \u00E9 \ud83d\ude00 and 😀 raw"}}]}"#,
    r#"{"choices":[{"delta":{"content":"\u0000\u001f"}}]}"#,
    r#"{"choices":[{"delta":{"content":""}}]}"#,
    r#"{"choices":[{"delta":{"content":null}}]}"#,
    r#"{"choices":[{"delta":{}}]}"#,
    r#"{"choices":[{"delta":null,"finish_reason":"stop"}]}"#,
    r#"{"choices":[]}"#,
    r#"{}"#,
    r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Paris\""}}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"b","function":{"name":"g","arguments":"{\"x\":1}"}}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f"}},{"function":null},{"index":null,"id":null}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":null}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
    r#"{"choices":[{"delta":{},"finish_reason":"content_filter"}]}"#,
    r#"{"choices":[{"delta":{},"finish_reason":"function_call"}]}"#,
    r#"{"choices":[{"delta":{},"finish_reason":"something_new"}]}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"total_tokens":162,"prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":56}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":18446744073709551615,"prompt_tokens_details":null,"prompt_cache_hit_tokens":null}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":null}}}"#,
    r#"{"choices":[],"usage":null,"error":null}"#,
    r#"{"choices":[{"delta":{"refusal":"I can't help with that."}}]}"#,
    r#"{"choices":[{"delta":{"refusal":null,"content":"ok"}}]}"#,
    r#"{"choices":[{"delta":{"reasoning_content":"think \"hard\"","reasoning":null}}]}"#,
    r#"{"choices":[{"delta":{"reasoning":"hmm","reasoning_content":""}}]}"#,
    r#"{"choices":[{"delta":{"reasoning_content":"a","reasoning":"b","content":"c"}}]}"#,
    r#"{"x":{"a":[1,-2.5e+3,0,1E9,true,false,null,{"b":"c\"\\\u1234"},[[]],{}]},"choices":[{"delta":{"content":"t","extra":[{"y":[1,2]}]},"logprobs":{"content":[{"token":"t","logprob":-0.1,"bytes":[116]}]}}],"system_fingerprint":"fp_1"}"#,
    " { \"choices\" : [ { \"delta\" : { \"content\" : \"spaced\" } , \"finish_reason\" : null } ] , \"usage\" : null } ",
    "{\n\t\"choices\":\r\n[{\"delta\":{\"content\":\"tabs\"}}]\n}",
    r#"{"id":"ab\u0063","choices":[{"delta":{"content":"t"}}]}"#,
    r#"{"choices":[{"delta":{"content":"x"}}],"choices_extra":[1,2]}"#,
];

/// Events the scanner leaves to serde (errors, or shapes it is not sure of): same result either way.
const FALLBACK: &[&str] = &[
    r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
    r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
    r#"{"error":{"message":"bad key","type":"authentication_error","code":null}}"#,
    r#"{"error":"oops"}"#,
    r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
    r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":5}}]}"#,
    r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
    r#"{"choices":[{"delta":{"content":"a"}}],"choices":[]}"#,
    r#"{"choices":[{"delta":{"cont\u0065nt":"escaped key"}}]}"#,
    r#"{"choices":[{"delta":{"content":"lone \ud83d surrogate"}}]}"#,
    r#"{"choices":[{"delta":{"content":"lone \ude00 low"}}]}"#,
    r#"{"choices":[{"delta":{"content":"bad \x escape"}}]}"#,
    "{\"choices\":[{\"delta\":{\"content\":\"raw\ttab\"}}]}",
    r#"{"choices":[{"delta":{"content":5}}]}"#,
    r#"{"choices":[{"delta":{"content":["a"]}}]}"#,
    r#"{"choices":null}"#,
    r#"{"choices":{}}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":1.0}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":01}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":[[0,"id",null]]}}]}"#,
    r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":null}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551616}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":1e3}}"#,
    r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":-1}}}"#,
    r#"{"choices":[],"usage":7}"#,
    r#"[[],null,null]"#,
    r#"[]"#,
    r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
    r#"{"choices":[{"delta":{"content":"x"}}]}{}"#,
    r#"{"choices":[{"delta":{"content":"x"}},]}"#,
    r#"{"choices":[{"delta":{"content":"x"},}]}"#,
    r#"{"choices":[{"delta":{"content":"unterminated}}]}"#,
    r#"{"choices":[{"delta":{"content":"x"}}]"#,
    r#"{"x":01,"choices":[]}"#,
    r#"{"x":1.,"choices":[]}"#,
    r#"{"x":-,"choices":[]}"#,
    r#"{"x":tru,"choices":[]}"#,
    r#"{"x":nulll,"choices":[]}"#,
    r#"{"x":"\u12G4","choices":[]}"#,
    r#"{"x":[1 2],"choices":[]}"#,
    r#"{"x":{"a" 1},"choices":[]}"#,
    r#"{"x":'a',"choices":[]}"#,
    r#"{choices:[]}"#,
    r#"not json"#,
    r#"{"#,
];

#[test]
fn the_scanner_decodes_common_events_as_serde_does() {
    for data in FAST {
        assert!(scan::chunk(data).is_some(), "the scanner should decode {data}");
        let fast = decode(data, true);
        assert_eq!(fast, decode(data, false), "{data}");
        assert!(fast.0.is_ok(), "{data}");
    }
}

#[test]
fn the_scanner_leaves_odd_events_to_serde() {
    for data in FALLBACK {
        assert!(scan::chunk(data).is_none(), "the scanner should leave {data} to serde");
        assert_eq!(decode(data, true), decode(data, false), "{data}");
    }
}

#[test]
fn deep_nesting_is_left_to_serde() {
    let deep = format!(r#"{{"x":{}{},"choices":[]}}"#, "[".repeat(200), "]".repeat(200));
    assert!(scan::chunk(&deep).is_none());
    assert_eq!(decode(&deep, true), decode(&deep, false));
    let ok = format!(r#"{{"x":{}{},"choices":[]}}"#, "[".repeat(60), "]".repeat(60));
    assert!(scan::chunk(&ok).is_some());
}

#[test]
fn scanned_strings_match_the_expected_text() {
    let (r, out, ..) = decode(FAST[2], true);
    assert!(r.is_ok());
    assert_eq!(out, vec![ModelChunk::Text("café é 😀 and 😀 raw".into())]);
    let (_, out, ..) = decode(FAST[1], true);
    assert_eq!(out, vec![ModelChunk::Text("line\nbreak \"quoted\" back\\slash / \u{8}\u{c}\r\t".into())]);
}

/// Every character as a `\uXXXX` escape (surrogate pairs beyond the BMP).
fn escape_all(s: &str) -> String {
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// JSON values whose keys are mostly the ones the decoder reads, so that they hit its fields
/// with any type and nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "choices",
        "delta",
        "content",
        "finish_reason",
        "tool_calls",
        "index",
        "id",
        "function",
        "name",
        "arguments",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "cached_tokens",
        "prompt_cache_hit_tokens",
        "refusal",
        "reasoning",
        "reasoning_content",
        "error",
        "message",
        "other",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        (0u64..3).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec!["stop", "tool_calls", "length", ""]).prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// An object with some of `fields` (each a key and its strategy), in any order.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<_> = fields
        .into_iter()
        .map(|(k, v)| prop::option::weighted(0.7, v).prop_map(move |v| v.map(|v| (k.to_string(), v))))
        .collect();
    (parts, any::<bool>())
        .prop_map(|(parts, reversed)| {
            let mut kv: Vec<_> = parts.into_iter().flatten().collect();
            if reversed {
                kv.reverse();
            }
            Value::Object(kv.into_iter().collect())
        })
        .boxed()
}

/// Events shaped like `chat.completion.chunk`, with odd values here and there.
fn chunk_value() -> impl Strategy<Value = Value> {
    answer_value("delta")
}

/// Answers shaped like a stream's events (`delta`) or a whole `chat.completion` (`message`), with
/// odd values here and there.
fn answer_value(message_key: &'static str) -> impl Strategy<Value = Value> {
    let text = || prop_oneof![4 => any::<String>().prop_map(Value::from), 1 => json_value()].boxed();
    let count = || prop_oneof![4 => (0u64..1000).prop_map(Value::from), 1 => json_value()].boxed();
    let function = object_of(vec![("name", text()), ("arguments", text()), ("other", json_value().boxed())]);
    let call = object_of(vec![
        ("index", count()),
        ("id", text()),
        ("type", Just(Value::from("function")).boxed()),
        ("function", prop_oneof![4 => function, 1 => json_value()].boxed()),
    ]);
    let calls = prop_oneof![4 => prop::collection::vec(call, 0..3).prop_map(Value::Array), 1 => json_value()];
    let delta = object_of(vec![
        ("role", Just(Value::from("assistant")).boxed()),
        ("content", text()),
        ("reasoning_content", text()),
        ("reasoning", text()),
        ("refusal", text()),
        ("tool_calls", calls.boxed()),
    ]);
    let choice = object_of(vec![
        ("index", count()),
        (message_key, prop_oneof![4 => delta, 1 => json_value()].boxed()),
        ("finish_reason", text()),
        ("logprobs", json_value().boxed()),
    ]);
    let details = object_of(vec![("cached_tokens", count()), ("audio_tokens", count())]);
    let usage = object_of(vec![
        ("prompt_tokens", count()),
        ("completion_tokens", count()),
        ("prompt_tokens_details", prop_oneof![4 => details, 1 => json_value()].boxed()),
        ("prompt_cache_hit_tokens", count()),
    ]);
    let choices = prop_oneof![
        4 => prop::collection::vec(choice, 0..2).prop_map(Value::Array),
        1 => json_value()
    ];
    object_of(vec![
        ("id", Just(Value::from("chatcmpl-1")).boxed()),
        ("choices", choices.boxed()),
        ("usage", prop_oneof![4 => usage, 1 => json_value()].boxed()),
        ("error", prop_oneof![4 => Just(Value::Null), 1 => json_value()].boxed()),
        ("other", json_value().boxed()),
    ])
}

type Decoded = Result<Vec<ModelChunk>, ModelError>;

/// A whole answer through the typed decoder, when it fits its types, and from a JSON tree.
fn decode_whole(body: &[u8]) -> (Option<Decoded>, Decoded) {
    let typed = serde_json::from_slice::<chunk::Obj<chunk::Completion<'_>>>(body).ok().map(|c| decode_completion(c.0));
    (typed, decode_tree(body))
}

#[test]
fn whole_answers_take_the_typed_path_and_decode_as_from_a_tree() {
    let answers = [
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"weather\"}"}}],"refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":8,"total_tokens":48,"prompt_tokens_details":{"cached_tokens":32,"audio_tokens":0}},"system_fingerprint":"fp_1"}"#,
        r#"{"choices":[{"message":{"role":"assistant","content":"It is sunny in \"Tokyo\".","reasoning_content":"Look it up."},"finish_reason":"stop"}],"usage":{"prompt_tokens":60,"completion_tokens":7,"prompt_cache_hit_tokens":50}}"#,
        r#"{"choices":[{"message":{"content":"cut"},"finish_reason":"length"}]}"#,
        r#"{"choices":[{"message":{"refusal":"No."},"finish_reason":"stop"}]}"#,
        r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        r#"{"choices":[]}"#,
    ];
    for answer in answers {
        let (typed, tree) = decode_whole(answer.as_bytes());
        assert_eq!(typed.as_ref(), Some(&tree), "{answer}");
    }
    let (typed, _) = decode_whole(answers[0].as_bytes());
    assert_eq!(
        typed.unwrap().unwrap(),
        vec![
            ModelChunk::ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("lookup".into()),
                arguments: r#"{"q":"weather"}"#.into()
            },
            ModelChunk::Usage(Usage {
                input_tokens: 8,
                cached_input_tokens: 32,
                cache_write_tokens: 0,
                output_tokens: 8,
                cost_usd: 0.0
            }),
            ModelChunk::Finish(FinishReason::ToolCalls),
        ]
    );
    // A field of another type leaves the typed path; the tree reads what it can.
    let odd = r#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1.5}}"#;
    let (typed, tree) = decode_whole(odd.as_bytes());
    assert!(typed.is_none());
    assert_eq!(crate::compatible::openai("gpt-4o").wire().decode_body(odd.as_bytes()), tree);
    assert_eq!(tree.unwrap()[0], ModelChunk::Text("hi".into()));
}

proptest! {
    #[test]
    fn whole_answers_decode_typed_as_from_a_tree(v in prop_oneof![json_value(), answer_value("message")]) {
        let body = serde_json::to_vec(&v).unwrap_or_default();
        let (typed, tree) = decode_whole(&body);
        if let Some(typed) = typed {
            prop_assert_eq!(typed, tree, "{}", v);
        }
    }

    #[test]
    fn content_round_trips_through_the_scanner(text in any::<String>()) {
        for quoted in [serde_json::to_string(&text).unwrap_or_default(), escape_all(&text)] {
            let data = format!(r#"{{"choices":[{{"index":0,"delta":{{"content":{quoted}}}}}]}}"#);
            prop_assert!(scan::chunk(&data).is_some());
            let fast = decode(&data, true);
            let expected = if text.is_empty() { vec![] } else { vec![ModelChunk::Text(text.clone())] };
            prop_assert_eq!(&fast.1, &expected);
            prop_assert_eq!(fast, decode(&data, false));
        }
    }

    #[test]
    fn arbitrary_json_decodes_as_serde_does(v in prop_oneof![json_value(), chunk_value()], cut in any::<prop::sample::Index>()) {
        let data = serde_json::to_string(&v).unwrap_or_default();
        prop_assert_eq!(decode(&data, true), decode(&data, false), "{}", data);
        // The same text with one byte left out: mostly malformed.
        let at = cut.index(data.len().max(1));
        if let Some(cut) = data.get(..at).zip(data.get(at + 1..)).map(|(a, b)| format!("{a}{b}")) {
            prop_assert_eq!(decode(&cut, true), decode(&cut, false), "{}", cut);
        }
    }

    #[test]
    fn streams_decode_as_serde_does(events in prop::collection::vec((any::<u8>(), any::<String>()), 0..12)) {
        let events: Vec<String> = events.iter().map(|(kind, text)| stream_event(*kind, text)).collect();
        prop_assert_eq!(decode_stream(&events, true), decode_stream(&events, false));
    }

    #[test]
    fn find_special_agrees_with_a_byte_loop(
        bytes in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(vec![0u8, 0x1f, 0x20, 0x21, b'"', b'\\', 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff])],
            0..40,
        )
    ) {
        let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        prop_assert_eq!(scan::find_special(&bytes), expected);
    }

    #[test]
    fn arbitrary_input_decodes_as_serde_does(data in "[{}\\[\\]\",:a-z0-9 \\\\.eE+-]{0,40}") {
        prop_assert_eq!(decode(&data, true), decode(&data, false));
    }
}
