//! A conversation: the prompt is the first message, then every line of standard input is
//! another (end with Ctrl-D). The KV cache is reused between turns, and old turns are dropped
//! when the context fills.
//!
//! `cargo run --release --example chat -- MODEL "What is the capital of France?"`

use std::io::{BufRead, Write};
use wgmoe::{Event, GenerateOptions, Model, ModelOptions, SessionOptions};

fn main() -> wgmoe::Result<()> {
    let (path, prompt) = args();
    let model = Model::open(&path, &ModelOptions::default())?;
    let mut chat = model.chat(&SessionOptions::default())?;
    chat.set_system("You are a helpful assistant.");
    let options = GenerateOptions::max_tokens(256);
    let mut lines = std::io::stdin().lock().lines();
    let mut message = Some(prompt);
    while let Some(text) = message {
        for event in chat.send(text, &options)? {
            if let Event::Token { text, .. } | Event::Text(text) = event? {
                print!("{text}");
                std::io::stdout().flush().ok();
            }
        }
        println!();
        message = lines.next().and_then(|l| l.ok()).filter(|l| !l.trim().is_empty());
    }
    Ok(())
}

fn args() -> (String, String) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(model), Some(prompt)) => (model, prompt),
        _ => {
            eprintln!("usage: chat MODEL PROMPT");
            std::process::exit(2);
        }
    }
}
