package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"
)

// completionFlag is urfave/cli's protocol: `kiss … --generate-bash-completion`
// prints the commands (or, after a word starting with '-', the flags) that
// may come next. The shell scripts below ask it.
const completionFlag = "--generate-bash-completion"

const bashCompletion = `# bash completion for kiss (kiss completion bash)
_kiss_complete() {
	local cur=${COMP_WORDS[COMP_CWORD]} words
	if [[ $cur == -* ]]; then
		words=$("${COMP_WORDS[@]:0:COMP_CWORD}" "$cur" ` + completionFlag + ` 2>/dev/null)
	else
		words=$("${COMP_WORDS[@]:0:COMP_CWORD}" ` + completionFlag + ` 2>/dev/null)
	fi
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _kiss_complete kiss
`

const zshCompletion = `#compdef kiss
# zsh completion for kiss (kiss completion zsh)
_kiss() {
	local cur=${words[CURRENT]}
	local -a next
	if [[ $cur == -* ]]; then
		next=(${(f)"$(${words[1,CURRENT-1]} $cur ` + completionFlag + ` 2>/dev/null)"})
	else
		next=(${(f)"$(${words[1,CURRENT-1]} ` + completionFlag + ` 2>/dev/null)"})
	fi
	if (( ${#next} )); then
		compadd -- $next
	else
		_files
	fi
}
compdef _kiss kiss
`

func init() {
	register(&cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a completion script generated from kiss's own command definitions:

   source <(kiss completion bash)              # bash, this shell
   kiss completion zsh > "${fpath[1]}/_kiss"   # zsh
   kiss completion fish > ~/.config/fish/completions/kiss.fish

The Nix package installs all three, and the man page (kiss man).`,
		Action: runCompletion,
	})
	register(&cli.Command{
		Name:   "man",
		Usage:  "print the man page (troff), generated from the command definitions",
		Action: runMan,
	})
}

func runCompletion(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError(errors.New("completion: want one of bash, zsh, fish"))
	}
	switch shell := c.Args().First(); shell {
	case "bash":
		_, err := fmt.Fprint(c.App.Writer, bashCompletion)
		return err
	case "zsh":
		_, err := fmt.Fprint(c.App.Writer, zshCompletion)
		return err
	case "fish":
		s, err := c.App.ToFishCompletion()
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(c.App.Writer, s)
		return err
	default:
		return usageError(fmt.Errorf("completion: unknown shell %q (want bash, zsh or fish)", shell))
	}
}

func runMan(c *cli.Context) error {
	if c.NArg() != 0 {
		return usageError(errors.New("man: takes no argument"))
	}
	s, err := c.App.ToManWithSection(1)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(c.App.Writer, s)
	return err
}
