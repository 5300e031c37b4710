# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_stencil_global_optspecs
    string join \n log-level= log-format= log-timestamps= h/help V/version
end

function __fish_stencil_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_stencil_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_stencil_using_subcommand
    set -l cmd (__fish_stencil_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c stencil -n "__fish_stencil_needs_command" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_needs_command" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_needs_command" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_needs_command" -s h -l help -d 'Print help'
complete -c stencil -n "__fish_stencil_needs_command" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "render" -d 'Render templates once, install the files that changed, run their commands'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "watch" -d 'Keep files current: re-render and reload when their data changes'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "check" -d 'Parse the config and every template; touch no network, write nothing'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "deps" -d 'Show what each template reads: env vars, keys, prefixes and files'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "subst" -d 'Substitute environment variables in shell format strings (envsubst)'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "exec" -d 'Render, wait for dependencies, then become the app: the container entrypoint'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "convert" -d 'Turn a confd or consul-template setup into stencil.toml and Jinja templates'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "man" -d 'Write the man pages (stencil.1 and one per command) into a directory'
complete -c stencil -n "__fish_stencil_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stencil -n "__fish_stencil_using_subcommand render" -s c -l config -d 'Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand render" -s t -l template -d 'A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l data -d 'A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env)' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l source -d 'A source as NAME=URL; file:///path/data.json is a data file' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l check -d 'For the -t templates: check the staged file with CMD before installing it' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l mode -d 'For the -t templates: the file mode, octal as chmod takes it (e.g. 0640)' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l owner -d 'For the -t templates: the owner of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l group -d 'For the -t templates: the group of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l wait-for-data -d 'How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once' -r
complete -c stencil -n "__fish_stencil_using_subcommand render" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand render" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand render" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand render" -l print-config -d 'Print the configuration as stencil understood it, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand render" -l create-dirs -d 'For the -t templates: create a missing destination directory'
complete -c stencil -n "__fish_stencil_using_subcommand render" -l dry-run -d 'Show what would be written (to stdout); write nothing, run no command'
complete -c stencil -n "__fish_stencil_using_subcommand render" -l diff -d 'Print a unified diff of each file that changes against its current content'
complete -c stencil -n "__fish_stencil_using_subcommand render" -l show-secrets -d 'With --diff or --dry-run, show the content of secret files too'
complete -c stencil -n "__fish_stencil_using_subcommand render" -l no-reload -d 'Install files but run no reload command'
complete -c stencil -n "__fish_stencil_using_subcommand render" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand render" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -s c -l config -d 'Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand watch" -s t -l template -d 'A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l data -d 'A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env)' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l source -d 'A source as NAME=URL; file:///path/data.json is a data file' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l check -d 'For the -t templates: check the staged file with CMD before installing it' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l mode -d 'For the -t templates: the file mode, octal as chmod takes it (e.g. 0640)' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l owner -d 'For the -t templates: the owner of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l group -d 'For the -t templates: the group of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l wait-for-data -d 'How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l listen -d 'Serve /healthz, /readyz, /metrics and /status on this address (e.g. 127.0.0.1:9180)' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l debounce -d 'Quiet period before acting on a change: MIN or MIN:MAX (default MAX: 4 × MIN)' -r
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l print-config -d 'Print the configuration as stencil understood it, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l create-dirs -d 'For the -t templates: create a missing destination directory'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l dry-run -d 'Show what would be written (to stdout); write nothing, run no command'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l diff -d 'Print a unified diff of each file that changes against its current content'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l show-secrets -d 'With --diff or --dry-run, show the content of secret files too'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l no-reload -d 'Install files but run no reload command'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -l once -d 'Render everything once, waiting for missing data, run the commands, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand watch" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand check" -s c -l config -d 'Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand check" -s t -l template -d 'A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l data -d 'A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env)' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l source -d 'A source as NAME=URL; file:///path/data.json is a data file' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l check -d 'For the -t templates: check the staged file with CMD before installing it' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l mode -d 'For the -t templates: the file mode, octal as chmod takes it (e.g. 0640)' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l owner -d 'For the -t templates: the owner of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l group -d 'For the -t templates: the group of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand check" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand check" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand check" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand check" -l print-config -d 'Print the configuration as stencil understood it, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand check" -l create-dirs -d 'For the -t templates: create a missing destination directory'
complete -c stencil -n "__fish_stencil_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand check" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand deps" -s c -l config -d 'Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand deps" -s t -l template -d 'A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l data -d 'A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env)' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l source -d 'A source as NAME=URL; file:///path/data.json is a data file' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l check -d 'For the -t templates: check the staged file with CMD before installing it' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l mode -d 'For the -t templates: the file mode, octal as chmod takes it (e.g. 0640)' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l owner -d 'For the -t templates: the owner of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l group -d 'For the -t templates: the group of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l print-config -d 'Print the configuration as stencil understood it, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l create-dirs -d 'For the -t templates: create a missing destination directory'
complete -c stencil -n "__fish_stencil_using_subcommand deps" -l json -d 'Print the dependencies as JSON instead of text'
complete -c stencil -n "__fish_stencil_using_subcommand deps" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand deps" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -s i -l input -d 'Read this file instead of standard input ("-": standard input)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand subst" -s o -l output -d 'Write this file instead of standard output, atomically like render: staged beside it, fsynced, renamed over it; unchanged if equal' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand subst" -s v -l variables -d 'Print the variables named in SHELL-FORMAT, one per line, and exit'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l extended -d 'Also expand ${VAR:-default}, ${VAR:=default}, ${VAR:?message}, ${VAR:+alt} and their forms without the colon, as a POSIX shell does'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l no-unset -d 'Fail (exit 1, write nothing) if a referenced variable is unset, naming every such variable'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -l no-empty -d 'Fail (exit 1, write nothing) if a referenced variable is empty or unset, naming every such variable. Implies --no-unset'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand subst" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -s c -l config -d 'Config file (TOML) with [[templates]] and [sources.NAME]; see stencil.toml(5)' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand exec" -s t -l template -d 'A template to render: SRC, SRC:DEST or SRC:DEST:RELOAD' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l data -d 'A data file as a source: [NAME=]FILE (JSON, TOML, YAML or .env)' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l source -d 'A source as NAME=URL; file:///path/data.json is a data file' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l check -d 'For the -t templates: check the staged file with CMD before installing it' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l mode -d 'For the -t templates: the file mode, octal as chmod takes it (e.g. 0640)' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l owner -d 'For the -t templates: the owner of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l group -d 'For the -t templates: the group of the file, a name or a numeric id' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l wait-for-data -d 'How long to wait for missing data before failing (e.g. 30s, 2m). Default: fail at once' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l wait -d 'Before starting the app, wait until URL is up; repeatable' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l wait-timeout -d 'How long to wait for all --wait dependencies together (e.g. 30s, 2m)' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l listen -d 'With --watch: serve /healthz, /readyz, /metrics and /status on this address; a bare port is on 127.0.0.1' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l debounce -d 'With --watch: quiet period before acting on a change, MIN or MIN:MAX' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l reload-signal -d 'With --watch: the signal sent to the app after a change (e.g. SIGHUP, SIGUSR2). [default: SIGHUP]' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l kill-signal -d 'With --watch: the signal that asks the app to stop, sent on SIGTERM and before a restart. [default: SIGTERM]' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l kill-timeout -d 'With --watch: how long the app may take to stop before its process group is SIGKILLed. [default: 10s]' -r
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l print-config -d 'Print the configuration as stencil understood it, then exit'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l create-dirs -d 'For the -t templates: create a missing destination directory'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l watch -d 'Stay as the app\'s parent and supervise it instead of exec\'ing into it'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l restart-on-change -d 'With --watch: restart the app after a change instead of signalling it'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -l signal-group -d 'With --watch: send forwarded and reload signals to the app\'s whole process group'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand exec" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -s o -l output -d 'The directory to write stencil.toml and templates/ into' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -l force -d 'Overwrite files already in DIR'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -f -a "confd" -d 'A confd confdir: conf.d/*.toml and templates/*.tmpl'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -f -a "consul-template" -d 'A consul-template HCL config file, or -template arguments'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and not __fish_seen_subcommand_from confd consul-template help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l backend -d 'confd\'s --backend: etcd, etcdv3, consul, env or file' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l node -d 'confd\'s --node: the backend\'s address (repeatable)' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l prefix -d 'confd\'s --prefix: prepended to every template\'s prefix' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l file -d 'confd\'s --file (file backend): the YAML data file(s)' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -s o -l output -d 'The directory to write stencil.toml and templates/ into' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -l force -d 'Overwrite files already in DIR'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -s h -l help -d 'Print help'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from confd" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -s t -l template -d 'consul-template\'s -template "in:out[:command]" (repeatable; given here as --template or -t)' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -l consul-addr -d 'consul-template\'s -consul-addr' -r
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -s o -l output -d 'The directory to write stencil.toml and templates/ into' -r -F
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -l force -d 'Overwrite files already in DIR'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -s h -l help -d 'Print help'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from consul-template" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "confd" -d 'A confd confdir: conf.d/*.toml and templates/*.tmpl'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "consul-template" -d 'A consul-template HCL config file, or -template arguments'
complete -c stencil -n "__fish_stencil_using_subcommand convert; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stencil -n "__fish_stencil_using_subcommand completions" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand completions" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand completions" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand completions" -s h -l help -d 'Print help'
complete -c stencil -n "__fish_stencil_using_subcommand completions" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand man" -l log-level -d 'How much to log on stderr' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c stencil -n "__fish_stencil_using_subcommand man" -l log-format -d 'Log line format: human-readable text, or one JSON object per line' -r -f -a "text\t''
json\t''"
complete -c stencil -n "__fish_stencil_using_subcommand man" -l log-timestamps -d 'Start text log lines with an RFC 3339 timestamp (UTC). [default: true, false when stderr is the systemd journal (JOURNAL_STREAM is set), which stamps lines itself]' -r -f -a "true\t''
false\t''"
complete -c stencil -n "__fish_stencil_using_subcommand man" -s h -l help -d 'Print help'
complete -c stencil -n "__fish_stencil_using_subcommand man" -s V -l version -d 'Print version'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "render" -d 'Render templates once, install the files that changed, run their commands'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "watch" -d 'Keep files current: re-render and reload when their data changes'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "check" -d 'Parse the config and every template; touch no network, write nothing'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "deps" -d 'Show what each template reads: env vars, keys, prefixes and files'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "subst" -d 'Substitute environment variables in shell format strings (envsubst)'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "exec" -d 'Render, wait for dependencies, then become the app: the container entrypoint'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "convert" -d 'Turn a confd or consul-template setup into stencil.toml and Jinja templates'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "completions" -d 'Print a shell completion script'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "man" -d 'Write the man pages (stencil.1 and one per command) into a directory'
complete -c stencil -n "__fish_stencil_using_subcommand help; and not __fish_seen_subcommand_from render watch check deps subst exec convert completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c stencil -n "__fish_stencil_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "confd" -d 'A confd confdir: conf.d/*.toml and templates/*.tmpl'
complete -c stencil -n "__fish_stencil_using_subcommand help; and __fish_seen_subcommand_from convert" -f -a "consul-template" -d 'A consul-template HCL config file, or -template arguments'
