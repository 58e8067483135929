// mimalloc instead of glibc's malloc: a decision allocates a few dozen small buffers (JSON,
// keys, Redis arguments and replies) on whichever tokio worker runs it, and freeing them on
// another; profiles of the load benchmark showed about a fifth of the process's CPU in
// glibc's malloc and free (docs/BENCHMARKS.md). Only the binary: the library leaves the
// choice to whoever embeds it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    control_plane::cli::main()
}
