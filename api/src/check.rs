//! `cep check`: validate pattern files, and show what they compile into.

use std::path::PathBuf;

use cep::Action;

use crate::run::{load_pattern, pattern_files};

/// Options of `cep check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Pattern files or directories of `*.json` pattern files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the compiled automaton: states and transitions.
    #[arg(long)]
    pub explain: bool,
}

/// Runs `cep check`; returns the process exit code (0 only if every pattern is valid).
pub fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let mut ok = true;
    let files = pattern_files(&args.paths)?;
    if files.is_empty() {
        eprintln!("no pattern files found");
        return Ok(1);
    }
    for f in files {
        match load_pattern(&f) {
            Ok(p) => {
                println!("{}: ok ({})", f.display(), p.name());
                if args.explain {
                    let nfa = p.nfa();
                    if nfa.window() > 0 {
                        println!("  window: {} ms", nfa.window());
                    }
                    println!("  runs on: {}", nfa.matcher());
                    for (i, s) in nfa.states().iter().enumerate() {
                        println!("  state {i} {:?} '{}'", s.kind, s.name);
                        for t in &s.transitions {
                            let verb = match t.action {
                                Action::Take => "take",
                                Action::Ignore => "ignore",
                                Action::Proceed => "proceed",
                            };
                            println!(
                                "    {verb} -> {} '{}' if {}",
                                t.target,
                                nfa.states()[t.target as usize].name,
                                nfa.condition_text(&t.cond)
                            );
                        }
                    }
                }
            }
            Err(e) => {
                ok = false;
                for line in e.lines() {
                    println!("{}: {line}", f.display());
                }
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}
