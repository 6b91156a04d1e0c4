//! One module per subcommand; each turns parsed flags into library calls.
//! This module only dispatches: what commands share is in `runtime`.

mod embed;
mod eval;
mod export;
mod filter;
mod index;
mod init;
mod mine;
mod report;
mod rerank;
mod rerank_train;
mod search;
mod train;

use crate::cli::{Cli, Command, RerankAction};
use crate::runtime::Context;
use anyhow::Result;

pub fn run(cli: Cli, ctx: &Context) -> Result<()> {
    match cli.command {
        Command::Init(args) => init::run(ctx, args),
        Command::Index(cmd) => index::run(ctx, cmd),
        Command::Search(args) => search::run(ctx, args),
        Command::Embed(args) => embed::run(ctx, args),
        Command::Eval(args) => eval::run(ctx, args),
        Command::Mine(args) => mine::run(ctx, args),
        Command::Export(args) => export::run(ctx, args),
        Command::Train(args) => train::run(ctx, *args),
        Command::Report(args) => report::run(ctx, args),
        Command::Serve(args) => crate::serve::run(ctx, args),
        Command::Filter(args) => filter::run(ctx, args),
        Command::Rerank(args) => match args.action {
            Some(RerankAction::Train(train)) => rerank_train::run(ctx, *train),
            None => rerank::run(ctx, args.score),
        },
    }
}
