from flukeline.cli import main

raise SystemExit(main())
