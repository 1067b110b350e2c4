from af_remote.cli import main

if __name__ == "__main__":
    main()
