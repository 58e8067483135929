// As control-plane/src/main.rs (which says why mimalloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    control_plane::cli::main()
}
