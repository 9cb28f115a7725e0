//! One model, two sessions on two threads at once: the weights are loaded once and shared, each
//! session has its own KV cache. Each answers the prompt under its own system message.
//!
//! `cargo run --release --example two_sessions -- MODEL "What is the capital of France?"`

use wgmoe::{GenerateOptions, Model, ModelOptions, SessionOptions};

fn main() -> wgmoe::Result<()> {
    let (path, prompt) = args();
    let model = Model::open(&path, &ModelOptions::default())?;
    let systems = ["Answer in one short sentence.", "You are a helpful geography teacher."];
    let threads: Vec<_> = systems
        .into_iter()
        .map(|system| {
            let (model, prompt) = (model.clone(), prompt.clone());
            std::thread::spawn(move || -> wgmoe::Result<String> {
                let mut chat = model.chat(&SessionOptions::default())?;
                chat.set_system(system);
                chat.ask(prompt, &GenerateOptions::max_tokens(128))
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let answer = t.join().expect("a session thread panicked")?;
        println!("[session {}] {answer}", i + 1);
    }
    Ok(())
}

fn args() -> (String, String) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(model), Some(prompt)) => (model, prompt),
        _ => {
            eprintln!("usage: two_sessions MODEL PROMPT");
            std::process::exit(2);
        }
    }
}
