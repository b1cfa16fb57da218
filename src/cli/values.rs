//! Command-line spellings of the image library's choices. The library
//! has no clap (a program embedding it has its own parser), so the enums
//! clap lists in `--help`, completions and man pages live here and
//! convert into the library's.

use shipyard_image::layer::compress::Compression;
use shipyard_image::transport::PullPolicy;

/// `--compression`: how a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        }
    }
}

/// `--pull`: when to contact a registry for an image the cache may
/// already hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullArg {
    /// Use the cached image when the tag was pulled before.
    Missing,
    /// Always ask the registry for the manifest (blobs already cached are
    /// not fetched again).
    Always,
    /// Never contact a registry; fail if the image is not cached.
    Never,
}

impl From<PullArg> for PullPolicy {
    fn from(p: PullArg) -> Self {
        match p {
            PullArg::Missing => PullPolicy::Missing,
            PullArg::Always => PullPolicy::Always,
            PullArg::Never => PullPolicy::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Each spelling on the command line reaches the library as the choice
    /// of the same name (a swapped arm would build with the wrong codec).
    #[test]
    fn each_value_converts_to_the_library_choice_of_its_name() {
        for v in CompressionArg::value_variants() {
            let name = v.to_possible_value().map(|p| p.get_name().to_string());
            let lib = format!("{:?}", Compression::from(*v)).to_lowercase();
            assert_eq!(name.as_deref(), Some(lib.as_str()));
        }
        for v in PullArg::value_variants() {
            let name = v.to_possible_value().map(|p| p.get_name().to_string());
            let lib = format!("{:?}", PullPolicy::from(*v)).to_lowercase();
            assert_eq!(name.as_deref(), Some(lib.as_str()));
        }
        assert_eq!(CompressionArg::value_variants().len(), 3);
        assert_eq!(PullArg::value_variants().len(), 3);
    }
}
