fn main() {
    // `sqlx::migrate!("../migrations")` embeds the migrations at compile time: rebuild when one
    // is added or changed (stable Rust cannot track the directory from the macro itself).
    println!("cargo:rerun-if-changed=../migrations");
}
