# bash completion for salvo. Installed as /usr/share/bash-completion/completions/salvo.
# cmd/salvo/completion_test.go fails when a command or option of `salvo --help` is missing here.

_salvo_user() {
    local sub=$1 cur=$2 prev=$3 opts=
    case $prev in
        --file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --ipv4 | --ipv6) return ;;
    esac
    case $sub in
        add) opts="--file --store --ipv4 --ipv6 --password-stdin" ;;
        passwd) opts="--file --store --password-stdin" ;;
        del) opts="--file --store" ;;
        disable) opts="--file --store" ;;
        enable) opts="--file --store" ;;
        list) opts="--file --store" ;;
    esac
    COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
}

_salvo() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="keygen pubkey user server client client-config status kick reload version help"
    local user_subcommands="add passwd del disable enable list"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return
    fi
    local cmd=${COMP_WORDS[1]} opts=
    case $prev in
        --config | --out | --password-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --socket | --control-socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    case $cmd in
        keygen) opts="--out" ;;
        pubkey) opts="" ;;
        server) opts="--config --check --control-socket" ;;
        client) opts="--config --check --down --control-socket" ;;
        status) opts="--socket --json" ;;
        kick) opts="--socket" ;;
        reload) opts="--socket" ;;
        client-config) opts="--config --password-file --qr" ;;
        version) opts="" ;;
        help)
            [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return
            ;;
        user)
            if [ "$COMP_CWORD" -eq 2 ]; then
                COMPREPLY=($(compgen -W "$user_subcommands --help" -- "$cur"))
            else
                _salvo_user "${COMP_WORDS[2]}" "$cur" "$prev"
            fi
            return
            ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
}

complete -F _salvo salvo
