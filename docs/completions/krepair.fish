# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_krepair_global_optspecs
    string join \n stats= dry-run report= force load-in= q/quiet timeout= memory-limit= h/help V/version
end

function __fish_krepair_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_krepair_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_krepair_using_subcommand
    set -l cmd (__fish_krepair_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c krepair -n "__fish_krepair_needs_command" -l stats -d 'What repaired layers compute: `auto` (what the model computed when it was saved), `adapted` (the stored statistics) or `identity` (mean 0, variance 1)' -r -f -a "auto\t'What the model computed when it was saved (see docs/version-matrix.md)'
adapted\t'The stored statistics'
identity\t'Mean 0, variance 1'"
complete -c krepair -n "__fish_krepair_needs_command" -l report -d 'Write the audit report as JSON to FILE (`-` for stdout)' -r -F
complete -c krepair -n "__fish_krepair_needs_command" -l load-in -d 'The Keras 3 versions a Keras 3 archive\'s output must load in: `all` (every pinned Keras 3 and the pinned pre-release), or versions and ranges by MAJOR.MINOR, comma-separated (`3.10..`, `..3.15`, `3.5..3.13`, `3.15,3.16`). What no form serves in all of them is reported (`not-loadable-in`)' -r
complete -c krepair -n "__fish_krepair_needs_command" -l timeout -d 'Stop an archive that takes longer than SECS (wall clock), with nothing written' -r
complete -c krepair -n "__fish_krepair_needs_command" -l memory-limit -d 'Memory budget for one archive, in MiB (beyond the mapped weights): an archive that needs more is stopped, with nothing written' -r
complete -c krepair -n "__fish_krepair_needs_command" -l dry-run -d 'Inspect and plan only; create no file (except --report). Takes the real run\'s command line: an OUTPUT is checked (not the input, not existing without --force) but not written'
complete -c krepair -n "__fish_krepair_needs_command" -l force -d 'Replace OUTPUT if it exists'
complete -c krepair -n "__fish_krepair_needs_command" -s q -l quiet -d 'Print nothing but errors'
complete -c krepair -n "__fish_krepair_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_needs_command" -s V -l version -d 'Print version'
complete -c krepair -n "__fish_krepair_needs_command" -a "migrate" -d 'Migrate a tf.keras 2.12-2.15 .keras archive so that Keras 3 (3.0 to 3.15) loads it, and repair its Normalization layers in the same run'
complete -c krepair -n "__fish_krepair_needs_command" -a "inspect" -d 'Show what is inside an archive: members, the layer tree with each layer\'s weights group and variables, and what `krepair` and `krepair migrate` would change'
complete -c krepair -n "__fish_krepair_needs_command" -a "diff" -d 'Show what differs between two archives (or two .weights.h5 files): config changes by layer and key, variables added, removed or changed (for equal shapes, the largest absolute and relative difference), members and metadata'
complete -c krepair -n "__fish_krepair_needs_command" -a "batch" -d 'Find, check and repair every .keras archive under PATHs'
complete -c krepair -n "__fish_krepair_needs_command" -a "completions" -d 'Print a shell completion script to stdout'
complete -c krepair -n "__fish_krepair_needs_command" -a "report" -d 'Work with run reports and journals of `krepair batch`'
complete -c krepair -n "__fish_krepair_needs_command" -a "man" -d 'Print the manual page (roff) to stdout: `krepair man | man -l -`'
complete -c krepair -n "__fish_krepair_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l stats -d 'What repaired layers compute: `auto` (what the model computed when it was saved), `adapted` (the stored statistics) or `identity` (mean 0, variance 1)' -r -f -a "auto\t'What the model computed when it was saved (see docs/version-matrix.md)'
adapted\t'The stored statistics'
identity\t'Mean 0, variance 1'"
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l report -d 'Write the audit report as JSON to FILE (`-` for stdout)' -r -F
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l load-in -d 'The Keras 3 versions a Keras 3 archive\'s output must load in: `all` (every pinned Keras 3 and the pinned pre-release), or versions and ranges by MAJOR.MINOR, comma-separated (`3.10..`, `..3.15`, `3.5..3.13`, `3.15,3.16`). What no form serves in all of them is reported (`not-loadable-in`)' -r
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l timeout -d 'Stop an archive that takes longer than SECS (wall clock), with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l memory-limit -d 'Memory budget for one archive, in MiB (beyond the mapped weights): an archive that needs more is stopped, with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l dry-run -d 'Inspect and plan only; create no file (except --report). Takes the real run\'s command line: an OUTPUT is checked (not the input, not existing without --force) but not written'
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -l force -d 'Replace OUTPUT if it exists'
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -s q -l quiet -d 'Print nothing but errors'
complete -c krepair -n "__fish_krepair_using_subcommand migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand inspect" -l timeout -d 'Stop an archive that takes longer than SECS (wall clock), with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand inspect" -l memory-limit -d 'Memory budget for one archive, in MiB (beyond the mapped weights): an archive that needs more is stopped, with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand inspect" -l json -d 'Print the manifest as JSON (docs/inspect.md) instead of a tree'
complete -c krepair -n "__fish_krepair_using_subcommand inspect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand diff" -l tolerance -d 'Values that differ by at most X (absolutely) count as equal' -r
complete -c krepair -n "__fish_krepair_using_subcommand diff" -l timeout -d 'Stop an archive that takes longer than SECS (wall clock), with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand diff" -l memory-limit -d 'Memory budget for one archive, in MiB (beyond the mapped weights): an archive that needs more is stopped, with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand diff" -l json -d 'Print the differences as JSON (docs/inspect.md) instead of text'
complete -c krepair -n "__fish_krepair_using_subcommand diff" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l out -d 'Write each archive to the same relative path under OUTDIR (archives with nothing to repair are copied). With --dry-run, each output there is checked as the real run would check it' -r -F
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l backup -d 'With --in-place: keep each original beside it, named NAME+SUFFIX (and skip archives whose names end with SUFFIX: they are backups)' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l load-in -d 'The Keras 3 versions every output must load in (as `krepair IN OUT --load-in`)' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l stats -d 'What repaired layers compute (as for a single archive)' -r -f -a "auto\t'What the model computed when it was saved (see docs/version-matrix.md)'
adapted\t'The stored statistics'
identity\t'Mean 0, variance 1'"
complete -c krepair -n "__fish_krepair_using_subcommand batch" -s j -l jobs -d 'Archives processed at once (default: the number of cores)' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l report -d 'Write the run report to FILE (`-` for stdout)' -r -F
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l report-format -d 'Format of the run report: `json` and `md` are written at the end; `jsonl` is a journal, one line per archive written as it finishes, then a summary line (a killed run leaves every finished line)' -r -f -a "json\t''
md\t''
jsonl\t''"
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l shard -d 'Process only shard K of N (1 <= K <= N): a pure function of each archive\'s path relative to its root, so N runs cover every archive once. Kubernetes Indexed Jobs: K = JOB_COMPLETION_INDEX + 1' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l resume -d 'Skip the archives a journal or run report (of an earlier, perhaps killed, run) records as finished, if their files are unchanged (size, modification time and SHA-256); failed ones are done again' -r -F
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l timeout -d 'Stop an archive that takes longer than SECS (wall clock), with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l memory-limit -d 'Memory budget for one archive, in MiB (beyond the mapped weights): an archive that needs more is stopped, with nothing written' -r
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l in-place -d 'Replace each archive, once its replacement is verified (with --dry-run: plan only)'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l dry-run -d 'Write nothing but the report. Takes the real run\'s command line (--out, --in-place, --backup)'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l migrate -d 'Also migrate tf.keras 2.13-2.15 archives to Keras 3 (as `krepair migrate`)'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l follow-links -d 'Follow symbolic links (loops are detected)'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -l force -d 'Replace existing outputs under OUTDIR'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -s q -l quiet -d 'Print nothing but errors; no progress bar'
complete -c krepair -n "__fish_krepair_using_subcommand batch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand report; and not __fish_seen_subcommand_from merge help" -s h -l help -d 'Print help'
complete -c krepair -n "__fish_krepair_using_subcommand report; and not __fish_seen_subcommand_from merge help" -f -a "merge" -d 'Merge the journals or run reports of several shards (or of a run and its resumptions) into one run report'
complete -c krepair -n "__fish_krepair_using_subcommand report; and not __fish_seen_subcommand_from merge help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c krepair -n "__fish_krepair_using_subcommand report; and __fish_seen_subcommand_from merge" -l format -d 'Format of the merged report' -r -f -a "json\t''
md\t''"
complete -c krepair -n "__fish_krepair_using_subcommand report; and __fish_seen_subcommand_from merge" -s o -l output -d 'Write the merged report to FILE (default: stdout)' -r -F
complete -c krepair -n "__fish_krepair_using_subcommand report; and __fish_seen_subcommand_from merge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c krepair -n "__fish_krepair_using_subcommand report; and __fish_seen_subcommand_from help" -f -a "merge" -d 'Merge the journals or run reports of several shards (or of a run and its resumptions) into one run report'
complete -c krepair -n "__fish_krepair_using_subcommand report; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c krepair -n "__fish_krepair_using_subcommand man" -s h -l help -d 'Print help'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "migrate" -d 'Migrate a tf.keras 2.12-2.15 .keras archive so that Keras 3 (3.0 to 3.15) loads it, and repair its Normalization layers in the same run'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "inspect" -d 'Show what is inside an archive: members, the layer tree with each layer\'s weights group and variables, and what `krepair` and `krepair migrate` would change'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "diff" -d 'Show what differs between two archives (or two .weights.h5 files): config changes by layer and key, variables added, removed or changed (for equal shapes, the largest absolute and relative difference), members and metadata'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "batch" -d 'Find, check and repair every .keras archive under PATHs'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "report" -d 'Work with run reports and journals of `krepair batch`'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "man" -d 'Print the manual page (roff) to stdout: `krepair man | man -l -`'
complete -c krepair -n "__fish_krepair_using_subcommand help; and not __fish_seen_subcommand_from migrate inspect diff batch completions report man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c krepair -n "__fish_krepair_using_subcommand help; and __fish_seen_subcommand_from report" -f -a "merge" -d 'Merge the journals or run reports of several shards (or of a run and its resumptions) into one run report'
