//! Answer one question with a model.
//!
//! `cargo run --release --example simple -- MODEL "What is the capital of France?"`
//!
//! MODEL is a Hugging Face model folder or a `.gguf` file.

use wgmoe::{GenerateOptions, Model, ModelOptions, SessionOptions};

fn main() -> wgmoe::Result<()> {
    let (path, prompt) = args();
    let model = Model::open(&path, &ModelOptions::default())?;
    let options = GenerateOptions::max_tokens(256);
    let answer = if model.has_chat_template() {
        model.chat(&SessionOptions::default())?.ask(prompt, &options)?
    } else {
        model
            .session(&SessionOptions::default())?
            .complete(prompt, &options)?
            .text
    };
    println!("{answer}");
    Ok(())
}

/// MODEL and PROMPT from the command line.
fn args() -> (String, String) {
    let mut args = std::env::args().skip(1);
    match (args.next(), args.next()) {
        (Some(model), Some(prompt)) => (model, prompt),
        _ => {
            eprintln!("usage: simple MODEL PROMPT");
            std::process::exit(2);
        }
    }
}
