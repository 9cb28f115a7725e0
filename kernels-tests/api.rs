//! The embedding API against a real model (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI): what an
//! app sees. Greedy decoding makes every expectation exact; the reference for each is the same
//! model run another way (one uninterrupted generation, a fresh session, one thread).

mod common;

use common::smollm2;
use std::sync::OnceLock;
use wgmoe::{
    BatchOptions, CancelToken, Completion, Constraint, ContextPolicy, Error, Event, GenerateOptions, Message, Model,
    ModelOptions, Prompt, SessionOptions, StopReason,
};

/// One model for the whole file (a load takes seconds on lavapipe); sessions are what is tested.
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        std::env::set_var("XDG_RUNTIME_DIR", "/tmp");
        let opts = ModelOptions {
            context: 512,
            prefill_chunk: 64,
            ..Default::default()
        };
        Model::open(smollm2(), &opts).unwrap()
    })
}

fn session() -> wgmoe::Session {
    model().session(&SessionOptions::default()).unwrap()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions::max_tokens(n).greedy()
}

fn chat_prompt(text: &str) -> Vec<u32> {
    let m = model();
    let rendered = m.apply_chat_template(&[Message::user(text)], true).unwrap();
    m.tokenize(&rendered, false).unwrap()
}

#[test]
fn a_question_is_answered_and_ends_at_the_end_of_turn() {
    let mut s = session();
    let prompt = chat_prompt("What is the capital of France?");
    let c = s.complete(prompt.clone(), &greedy(200)).unwrap();
    assert!(c.text.contains("Paris"), "{:?}", c.text);
    // The default stop tokens are the model's: the reply ends at its end of turn, which is not
    // part of the reply or the session.
    let StopReason::StopToken(id) = c.stop_reason else {
        panic!("{:?} after {} tokens", c.stop_reason, c.tokens.len())
    };
    assert!(model().eos_tokens().contains(&id));
    assert!(!c.tokens.contains(&id));
    assert_eq!(s.tokens(), [prompt.as_slice(), &c.tokens].concat());
    assert_eq!(c.stats.generated_tokens, c.tokens.len());
    assert_eq!(c.stats.prompt_tokens, prompt.len());
    assert_eq!(c.text, model().detokenize(&c.tokens).unwrap());
}

#[test]
fn events_stream_the_same_reply_as_the_internal_decode_loop() {
    // Longer than the 64-token prefill chunk: the API runs it in two chunks, the reference in one.
    let prompt = chat_prompt(
        "Here is a list of things I saw on my walk today: a red car, a blue bird, a green tree, a yellow \
         flower, a white cloud, a black cat, an orange leaf and a purple door. Name three colours from it.",
    );
    assert!(prompt.len() > 64 && prompt.len() <= 128, "{}", prompt.len());
    let mut s = session();
    let mut events = Vec::new();
    for e in s.generate(prompt.clone(), &greedy(24)).unwrap() {
        events.push(e.unwrap());
    }
    let Some(Event::Done { stop_reason, stats }) = events.last().cloned() else {
        panic!("the last event is not Done: {events:?}")
    };
    let ids: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let text: String = events
        .iter()
        .map(|e| match e {
            Event::Token { text, .. } | Event::Text(text) => text.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(text, model().detokenize(&ids).unwrap());
    assert_eq!(stats.generated_tokens, ids.len());
    // The reference: the runtime's own decode loop on the same weights and cache precision.
    let raw = model().internals();
    let mut r = raw.try_session(512, wgmoe::KvDtype::F16).unwrap();
    let opts = wgmoe::internals::generate::GenerateOptions {
        max_new_tokens: 24,
        stop: model().eos_tokens().to_vec(),
        ..Default::default()
    };
    let (want, _) = r.generate(&prompt, &opts, |_| Ok(())).unwrap();
    assert_eq!(ids, want, "{stop_reason:?}");
}

#[test]
fn a_generation_continues_where_max_tokens_or_a_cancel_left_it() {
    let prompt = chat_prompt("Write a short poem about the sea.");
    let want = session().complete(prompt.clone(), &greedy(16)).unwrap().tokens;
    assert_eq!(want.len(), 16, "the reference reply ended early");

    // max_tokens: 6 now, 10 more later; the last token of the first part was never run through
    // the model, and the second call must feed it first.
    let mut s = session();
    let a = s.complete(prompt.clone(), &greedy(6)).unwrap();
    assert_eq!(a.stop_reason, StopReason::MaxTokens);
    assert_eq!(s.position(), prompt.len() + 6);
    let b = s.complete(Vec::<u32>::new(), &greedy(10)).unwrap();
    assert_eq!([a.tokens, b.tokens].concat(), want);

    // A cancel after 4 tokens stops within one step; the session holds exactly what it emitted.
    let mut s = session();
    let cancel = CancelToken::new();
    let opts = GenerateOptions {
        cancel: Some(cancel.clone()),
        ..greedy(16)
    };
    let mut got = Vec::new();
    let mut reason = None;
    for e in s.generate(prompt.clone(), &opts).unwrap() {
        match e.unwrap() {
            Event::Token { id, .. } => {
                got.push(id);
                if got.len() == 4 {
                    cancel.cancel();
                }
            }
            Event::Done { stop_reason, .. } => reason = Some(stop_reason),
            Event::Text(_) => {}
        }
    }
    assert_eq!(reason, Some(StopReason::Cancelled));
    assert_eq!(got, want[..4]);
    assert_eq!(s.tokens(), [prompt.as_slice(), &got].concat());
    let rest = Completion::collect(s.resume(&greedy(12)).unwrap(), |_| {}).unwrap();
    assert_eq!([got, rest.tokens].concat(), want);

    // Dropping the iterator midway is a cancel too.
    let mut s = session();
    let first: Vec<_> = s.generate(prompt.clone(), &greedy(16)).unwrap().take(3).collect();
    assert_eq!(first.len(), 3);
    assert_eq!(s.position(), prompt.len() + 3);
}

#[test]
fn stop_strings_end_the_text_just_before_them() {
    let prompt = chat_prompt("Count from one to ten in words.");
    let full = session().complete(prompt.clone(), &greedy(40)).unwrap();
    // A stop string taken from the middle of the reference reply.
    let words: Vec<&str> = full.text.split_whitespace().collect();
    assert!(words.len() > 4, "{:?}", full.text);
    let stop = words[3].to_string();
    let at = full.text.find(&stop).unwrap();
    let opts = GenerateOptions {
        stop: vec![stop.clone()],
        ..greedy(40)
    };
    let c = session().complete(prompt, &opts).unwrap();
    assert_eq!(c.stop_reason, StopReason::StopString(stop));
    assert_eq!(c.text, full.text[..at]);
    assert!(full.tokens.starts_with(&c.tokens));
}

#[test]
fn a_chat_reuses_its_cache_between_turns_and_answers_as_a_fresh_session_would() {
    let mut chat = model().chat(&SessionOptions::default()).unwrap();
    chat.set_system("You are a helpful assistant.");
    let first = chat
        .send("What is the capital of France?", &greedy(20))
        .unwrap()
        .text()
        .unwrap();
    assert!(first.contains("Paris"), "{first:?}");
    let mut turn = chat.send("And of Italy?", &greedy(20)).unwrap();
    let mut prompt_tokens = 0;
    let mut second = String::new();
    for e in turn.by_ref() {
        match e.unwrap() {
            Event::Token { text, .. } | Event::Text(text) => second.push_str(&text),
            Event::Done { stats, .. } => prompt_tokens = stats.prompt_tokens,
        }
    }
    drop(turn);
    assert_eq!(chat.messages().len(), 5);
    assert_eq!(chat.messages()[4], Message::assistant(second.clone()));
    // Only what the second turn added was run.
    let whole = chat_prompt_of(&chat.messages()[..4]);
    assert!(
        prompt_tokens > 0 && prompt_tokens < whole.len() / 2,
        "{prompt_tokens} of {}",
        whole.len()
    );
    // The same conversation from scratch gives the same reply.
    let fresh = session().complete(whole, &greedy(20)).unwrap();
    assert_eq!(fresh.text, second);
}

fn chat_prompt_of(messages: &[Message]) -> Vec<u32> {
    let m = model();
    m.tokenize(&m.apply_chat_template(messages, true).unwrap(), false)
        .unwrap()
}

#[test]
fn a_full_context_drops_old_turns_or_is_an_error_by_policy() {
    let small = SessionOptions {
        context: Some(96),
        ..Default::default()
    };
    let mut chat = model().chat(&small).unwrap();
    chat.set_system("Be brief.");
    for q in ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a country."] {
        let reply = chat.send(q, &greedy(16)).unwrap().text().unwrap();
        assert!(!reply.is_empty());
        assert!(chat.session().position() <= 96);
    }
    assert!(chat.dropped() > 0, "four turns of ~40 tokens fit 96?");
    assert_eq!(chat.messages()[0].role, "system");

    let mut strict = model().chat(&small).unwrap().with_policy(ContextPolicy::Error);
    let mut err = None;
    for q in ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a country."] {
        match strict.send(q, &greedy(16)) {
            Ok(turn) => {
                turn.text().unwrap();
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let n = strict.messages().len();
    assert!(matches!(err, Some(Error::ContextFull { capacity: 96, .. })), "{err:?}");
    // The refused message was not kept.
    assert_eq!(strict.messages()[n - 1].role, "assistant");
}

#[test]
fn saved_restored_and_forked_states_continue_like_the_original() {
    let m = model();
    let system = m
        .tokenize(
            &m.apply_chat_template(&[Message::system("You answer in one sentence.")], false)
                .unwrap(),
            false,
        )
        .unwrap();
    let question = |q: &str| {
        let all = chat_prompt_of(&[Message::system("You answer in one sentence."), Message::user(q)]);
        assert!(all.starts_with(&system));
        all[system.len()..].to_vec()
    };
    let mut base = session();
    base.prefill(system.clone()).unwrap();
    let state = base.save_state().unwrap();
    let fork = base.fork().unwrap();

    let a = base
        .complete(question("What is the capital of France?"), &greedy(12))
        .unwrap();
    let mut restored = session();
    restored.restore_state(&state).unwrap();
    assert_eq!(restored.tokens(), system);
    let b = restored
        .complete(question("What is the capital of France?"), &greedy(12))
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    let mut fork = fork;
    let c = fork
        .complete(question("What is the capital of France?"), &greedy(12))
        .unwrap();
    assert_eq!(a.tokens, c.tokens);
    // Only the question ran after the restore.
    assert_eq!(b.stats.prompt_tokens, question("What is the capital of France?").len());

    // A state of another cache precision is refused, and so is garbage.
    let mut f32 = model()
        .session(&SessionOptions {
            kv_cache: Some(wgmoe::KvDtype::F32),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(f32.restore_state(&state), Err(Error::BadInput(_))));
    assert!(matches!(f32.restore_state(b"nonsense"), Err(Error::BadInput(_))));
    assert_eq!(f32.position(), 0);
}

#[test]
fn two_sessions_on_two_threads_get_their_sequential_results() {
    let prompts = [
        chat_prompt("What is the capital of France?"),
        chat_prompt("Name a large animal."),
    ];
    let sequential: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| session().complete(p.clone(), &greedy(20)).unwrap().tokens)
        .collect();
    for _ in 0..2 {
        let threads: Vec<_> = prompts
            .iter()
            .cloned()
            .map(|p| {
                let model = model().clone();
                std::thread::spawn(move || {
                    let mut s = model.session(&SessionOptions::default()).unwrap();
                    s.complete(p, &greedy(20)).unwrap().tokens
                })
            })
            .collect();
        let concurrent: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(concurrent, sequential);
    }
}

#[test]
fn gpu_memory_stays_flat_over_prompts_of_many_lengths() {
    // A model of its own: wgpu's counters are per device, and the other tests' sessions come and
    // go on the shared one.
    let opts = ModelOptions {
        context: 128,
        ..Default::default()
    };
    let model = Model::open(smollm2(), &opts).unwrap();
    let device = &model.internals().ctx.device;
    let live = || {
        // Freed buffers go once the GPU is done with them.
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        device.get_internal_counters().hal.buffer_memory.read()
    };
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let mut run = |lengths: std::ops::Range<usize>| {
        for n in lengths {
            s.reset();
            s.complete((0..n as u32).map(|i| 100 + i).collect::<Vec<_>>(), &greedy(1))
                .unwrap();
        }
    };
    // Six prompt lengths, then six new ones: each length is a plan of its own, and without
    // eviction the second six would add six plans' memory.
    run(2..8);
    let first = live();
    run(8..14);
    let second = live();
    assert!(first > 0, "wgpu's counters are off");
    let plan = {
        let before = live();
        let mut extra = model.session(&SessionOptions::default()).unwrap();
        extra.complete(vec![100u32; 13], &greedy(1)).unwrap();
        let with = live();
        drop(extra);
        with - before
    };
    assert!(
        second <= first + plan / 4,
        "GPU memory grew from {first} to {second} bytes over six new prompt lengths (a session with one \
         13-token plan takes {plan})"
    );
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let mut s = session();
    s.prefill("Hello").unwrap();
    let before = s.tokens().to_vec();
    let e = s.complete(vec![u32::MAX], &greedy(4)).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
    let long = vec![1u32; 600];
    let e = s.complete(long, &greedy(4)).unwrap_err();
    assert!(matches!(e, Error::ContextFull { capacity: 512, .. }), "{e}");
    let hot = GenerateOptions {
        sampling: Some(wgmoe::Sampling {
            temperature: -1.0,
            top_k: 0,
            top_p: 1.0,
        }),
        ..greedy(4)
    };
    let e = s.complete(" world", &hot).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
    let e = s
        .complete(
            " world",
            &GenerateOptions {
                stop: vec![String::new()],
                ..greedy(4)
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
    assert_eq!(s.tokens(), before);
    // Prompts of text after the first get no second begin-of-sequence token.
    let ids = model().tokenize(" world", false).unwrap();
    s.complete(Prompt::from(" world"), &greedy(0)).unwrap();
    assert_eq!(s.tokens(), [before.as_slice(), &ids].concat());

    let missing = Model::open("/nonexistent/model.gguf", &ModelOptions::default()).unwrap_err();
    assert!(
        matches!(missing, Error::Io { .. } | Error::BadModel { .. }),
        "{missing}"
    );
    let cancel = CancelToken::new();
    cancel.cancel();
    let opts = ModelOptions {
        cancel: Some(cancel),
        ..Default::default()
    };
    assert!(matches!(Model::open(smollm2(), &opts), Err(Error::Cancelled)));
    // A cancel during the load stops it at the next tensor.
    let cancel = CancelToken::new();
    let (c, seen) = (
        cancel.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let seen2 = seen.clone();
    let opts = ModelOptions {
        cancel: Some(cancel),
        progress: Some(std::sync::Arc::new(move |done, _total| {
            seen2.store(done, std::sync::atomic::Ordering::SeqCst);
            if done >= 5 {
                c.cancel();
            }
        })),
        ..Default::default()
    };
    assert!(matches!(Model::open(smollm2(), &opts), Err(Error::Cancelled)));
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) <= 6);
}

#[test]
fn constrained_replies_match_their_schema_or_pattern() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "country": {"enum": ["France", "Italy", "Spain", "Germany"]},
            "population": {"type": "integer", "minimum": 0}
        },
        "required": ["city", "country"],
        "additionalProperties": false
    });
    let opts = GenerateOptions {
        constraint: Some(Constraint::json_schema(schema)),
        ..greedy(80)
    };
    let prompt = chat_prompt("Name a European capital and its country, as JSON.");
    let c = session().complete(prompt, &opts).unwrap();
    // The grammar completes, then allows only the end of turn.
    assert!(
        matches!(c.stop_reason, StopReason::StopToken(_)),
        "{:?}: {:?}",
        c.stop_reason,
        c.text
    );
    let v: serde_json::Value = serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("{e}: {:?}", c.text));
    let o = v.as_object().unwrap();
    assert!(
        o.keys()
            .all(|k| ["city", "country", "population"].contains(&k.as_str())),
        "{v}"
    );
    assert!(o["city"].as_str().is_some_and(|c| c.chars().count() <= 24), "{v}");
    assert!(
        ["France", "Italy", "Spain", "Germany"].contains(&o["country"].as_str().unwrap()),
        "{v}"
    );
    assert!(o.get("population").is_none_or(|p| p.as_u64().is_some()), "{v}");

    // A pattern no model writes by itself: three digits, a dash, two lowercase letters, then the
    // end (the grammar is complete, so only the end of turn is allowed).
    let opts = GenerateOptions {
        constraint: Some(Constraint::regex("[0-9]{3}-[a-z]{2}")),
        ..greedy(12)
    };
    let c = session().complete("Code:", &opts).unwrap();
    let b = c.text.as_bytes();
    assert!(
        b.len() == 6
            && b[..3].iter().all(u8::is_ascii_digit)
            && b[3] == b'-'
            && b[4..].iter().all(u8::is_ascii_lowercase),
        "{:?}",
        c.text
    );
    assert!(matches!(c.stop_reason, StopReason::StopToken(_)), "{:?}", c.stop_reason);

    // A schema that is not one is the caller's error.
    let bad = GenerateOptions {
        constraint: Some(Constraint::json_schema(serde_json::json!({"type": "no such type"}))),
        ..greedy(5)
    };
    let mut s = session();
    let err = s.complete(chat_prompt("Hi"), &bad).unwrap_err();
    assert!(matches!(err, Error::BadInput(_)), "{err:?}");
    assert_eq!(s.position(), 0);
}

#[test]
fn a_batch_gives_each_generation_its_result_alone() {
    let m = model();
    // Short plain prompts: a software GPU spends seconds on a chat template's prefill.
    let questions = ["The capital of France is", "One, two, three,", "My favourite colour is"];
    let prompts: Vec<Vec<u32>> = questions.iter().map(|q| m.tokenize(q, true).unwrap()).collect();
    // The reference: each alone in a session of its own.
    let alone: Vec<Completion> = prompts
        .iter()
        .map(|p| session().complete(p.clone(), &greedy(8)).unwrap())
        .collect();
    // Two sequences for three generations: the third waits for a slot, then joins.
    let mut batch = m
        .batch(&BatchOptions {
            sequences: 2,
            context: Some(256),
            kv_cache: None,
        })
        .unwrap();
    let ids: Vec<_> = prompts
        .iter()
        .map(|p| batch.add(p.clone(), &greedy(8)).unwrap())
        .collect();
    assert_eq!((batch.running(), batch.waiting()), (0, 3));
    let mut got: Vec<Completion> = ids.iter().map(|_| Completion::default()).collect();
    let mut most_running = 0;
    while !batch.is_idle() {
        for (id, event) in batch.step() {
            got[ids.iter().position(|i| *i == id).unwrap()].add(event.unwrap());
        }
        most_running = most_running.max(batch.running());
    }
    assert_eq!(most_running, 2);
    for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
        assert_eq!(
            (&g.tokens, &g.text, &g.stop_reason),
            (&a.tokens, &a.text, &a.stop_reason),
            "{}",
            questions[i]
        );
        assert_eq!(g.stats.generated_tokens, g.tokens.len());
    }
    // The last question again: its slot still holds it (the first question's slot went to the
    // third), so only the last prompt token runs.
    let again = batch.add(prompts[2].clone(), &greedy(8)).unwrap();
    let mut c = Completion::default();
    while !batch.is_idle() {
        for (id, event) in batch.step() {
            assert_eq!(id, again);
            c.add(event.unwrap());
        }
    }
    assert_eq!(c.tokens, alone[2].tokens);
    assert_eq!(c.stats.prompt_tokens, 1, "cached prompt");
    // Bad input is refused at once, and a cancel ends a generation with Cancelled.
    assert!(matches!(batch.add(vec![u32::MAX], &greedy(1)), Err(Error::BadInput(_))));
    let long = vec![prompts[0][0]; 300];
    assert!(matches!(batch.add(long, &greedy(1)), Err(Error::ContextFull { .. })));
    let id = batch.add(prompts[1].clone(), &greedy(50)).unwrap();
    batch.step();
    assert!(batch.cancel(id));
    let last: Vec<_> = batch.step().into_iter().map(|(_, e)| e.unwrap()).collect();
    assert!(
        matches!(
            last.last(),
            Some(Event::Done {
                stop_reason: StopReason::Cancelled,
                ..
            })
        ),
        "{last:?}"
    );
    assert!(batch.is_idle());
    // One cancelled while it waits for a slot ends at the next step, never run.
    let ids: Vec<_> = prompts
        .iter()
        .map(|p| batch.add(p.clone(), &greedy(2)).unwrap())
        .collect();
    assert!(batch.cancel(ids[2]));
    let first = batch.step();
    let ended = first
        .iter()
        .find(|(id, _)| *id == ids[2])
        .map(|(_, e)| e.as_ref().unwrap());
    assert!(
        matches!(ended, Some(Event::Done { stop_reason: StopReason::Cancelled, stats }) if stats.generated_tokens == 0),
        "{first:?}"
    );
    while !batch.is_idle() {
        assert!(batch.step().iter().all(|(id, e)| *id != ids[2] && e.is_ok()));
    }
}
