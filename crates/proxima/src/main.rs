//! The `proxima` binary.

/// mimalloc instead of the system allocator: a request allocates and frees many small objects
/// (headers, JSON values, strings), and glibc's malloc spent about a sixth of the gateway's
/// instructions on them.
#[global_allocator]
static GLOBAL: proxima::allocator::MiMalloc = proxima::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    proxima::cli::main()
}
