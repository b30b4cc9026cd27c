from attnseg.cli import main

raise SystemExit(main())
