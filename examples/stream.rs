//! Stream a reply token by token as the model writes it, then say how fast it went.
//!
//! `cargo run --release --example stream -- MODEL "Write a haiku about the sea."`

use std::io::Write;
use wgmoe::{Event, GenerateOptions, Message, Model, ModelOptions, Prompt, SessionOptions};

fn main() -> wgmoe::Result<()> {
    let (path, prompt) = args();
    let model = Model::open(&path, &ModelOptions::default())?;
    let mut session = model.session(&SessionOptions::default())?;
    // A chat model gets the question through its template; a base model continues the text.
    let prompt = if model.has_chat_template() {
        let text = model.apply_chat_template(&[Message::user(prompt)], true)?;
        Prompt::Tokens(model.tokenize(&text, false)?)
    } else {
        Prompt::Text(prompt)
    };
    let mut out = std::io::stdout();
    for event in session.generate(prompt, &GenerateOptions::max_tokens(256))? {
        match event? {
            Event::Token { text, .. } | Event::Text(text) => {
                print!("{text}");
                out.flush().ok();
            }
            Event::Done { stop_reason, stats } => {
                println!();
                eprintln!(
                    "{} tokens at {:.1} tokens/s ({stop_reason:?})",
                    stats.generated_tokens,
                    stats.decode_tokens_per_second()
                );
            }
        }
    }
    Ok(())
}

fn args() -> (String, String) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(model), Some(prompt)) => (model, prompt),
        _ => {
            eprintln!("usage: stream MODEL PROMPT");
            std::process::exit(2);
        }
    }
}
