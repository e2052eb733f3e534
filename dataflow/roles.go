package dataflow

import "context"

// BatchSystem starts and stops pilot jobs: the local process launcher of
// `scalebox run`, or a Slurm cluster. The server's pool logic is written
// against this interface only.
type BatchSystem interface {
	// Submit starts one pilot job and returns its id.
	Submit(ctx context.Context, req PilotRequest) (string, error)
	// Status reports many jobs in one call; ids it does not know are JobUnknown.
	Status(ctx context.Context, ids []string) (map[string]JobState, error)
	// Cancel stops jobs; cancelling a finished job is not an error.
	Cancel(ctx context.Context, ids []string) error
	// Ping checks the batch system is reachable.
	Ping(ctx context.Context) error
}
