// Package templates holds the files Scalebox renders or installs: shell
// completion scripts now, and the sbatch pilot script, modulefiles and the
// module skeleton as they arrive. Render functions are pure.
package templates

import (
	"embed"
	"fmt"
)

//go:embed completion sbatch modulefiles apptainer
var files embed.FS

// Completion returns the completion script for shell ("bash" or "zsh").
func Completion(shell string) (string, error) {
	switch shell {
	case "bash", "zsh":
	default:
		return "", fmt.Errorf("shell %q: want bash or zsh", shell)
	}
	b, err := files.ReadFile("completion/scalebox." + shell)
	return string(b), err
}
